from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    name = "benchmarks"
    verbose_name = "Benchmarks"

    def ready(self) -> None:
        from shop import env

        # `make bench` counts every SQL statement Django sends, in every process of a mode; nothing is
        # installed unless it asks, so no other run pays for the counting.
        directory = env.get_str("SHOP_BENCH_SQL_COUNT_DIR")
        if directory:
            from benchmarks.sqlcount import install

            install(directory)
