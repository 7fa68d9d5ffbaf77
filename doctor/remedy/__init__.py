"""Remediation as data: the actions a fix is made of, rendered to POSIX sh (what the report
prints and ``aidoctor fix`` writes) and applied in Python (to a tree or to the live host).

One model renders both, so what is printed is what is applied: ``actions`` defines each kind
and its shell form, ``target`` applies them inside a root with backups, ``plan`` picks one
alternative per finding.
"""
