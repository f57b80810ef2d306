"""Plans (spec §3): ``loader`` reads, validates, hashes and cuts a plan file into windows;
``schema`` is the file's shape as pydantic models; ``fields`` the value types those models use
(UTC times, durations, parameters); ``relative`` resolves ``[windows]`` bounds written relative
to now.
"""
