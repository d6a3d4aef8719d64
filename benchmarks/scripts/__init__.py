"""Workload scripts: each runs in a fresh subprocess under caraway's or Celery's interpreter.

They import only the standard library and the generated ``benchapp`` module (the system's
app, ``add``, ``tsum``, ``group``/``chord`` or None), and print one ``BENCH-RESULT`` line.
"""
