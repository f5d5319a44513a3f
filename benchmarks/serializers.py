from rest_framework import serializers


class BenchInsertSerializer(serializers.Serializer):
    note = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
