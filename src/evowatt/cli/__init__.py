"""The command line, one module per job.

``main`` (the entry point: exit statuses) -> ``parser`` (every sub-command and its options; ``args`` holds
the argument types, ``energy_parser`` the energy commands' options) -> the sub-commands: ``commands`` (run,
resume, check-grammar, import-config, export, report), ``show`` (show and the answer a run ends with),
``energy_commands`` (meters, measure, calibrate). ``progress`` draws a run as it goes, ``interrupts`` ends
a command stopped from outside, ``output`` is the console and how figures read.
"""
