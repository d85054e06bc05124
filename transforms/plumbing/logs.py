"""Logging that cannot leak: restricted data (notice URLs, dead-letter payloads) is in flight through the
pipeline, and Beam's worker writes every element it combines or flattens into the log at DEBUG."""
import logging

ELEMENT_DUMPING_LOGGERS = ("apache_beam.runners.worker.operations",)


def keep_elements_out_of_logs():
    """Stops Beam's per-element DEBUG dumps (those loggers log at INFO and up), whatever the root level."""
    for name in ELEMENT_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
