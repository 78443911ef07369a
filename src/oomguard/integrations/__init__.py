"""Adapters that put oomguard inside other libraries' trainers, one package or module per library.

Each is imported only when its library is used, so that oomguard itself never
needs ultralytics, transformers or lightning installed.
"""
