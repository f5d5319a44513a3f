from django.apps import AppConfig


class TwopcConfig(AppConfig):
    name = "twopc"
    verbose_name = "Two-phase commit"
