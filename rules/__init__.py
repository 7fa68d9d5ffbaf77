"""The checks, one module per area; each registers its rules with ``ai_doctor.engine.rule``.

Rules read facts and return findings. They never open files, run commands or touch ``os``:
every byte comes through the Host and the fact parsers (a test enforces this).
"""
