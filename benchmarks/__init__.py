"""The bare one-INSERT endpoint `make bench` measures every mode against, and the per-process SQL statement
counter (`sqlcount`) the bench installs."""
