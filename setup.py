"""Packages of cam-studio; everything else is declared in pyproject.toml.

The demo models and samples stay in the top-level ``assets/`` (the one source of
truth). A wheel carries a copy of them as the data-only package ``camcore._bundled``
(mapped from ``assets/``), which ``camcore.assets`` uses when there is no source tree.
"""

from setuptools import find_namespace_packages, setup

setup(
    # namespace search: dashboard/views holds Streamlit page scripts, not an __init__.py
    packages=find_namespace_packages(
        include=["camcore", "camcore.*", "dashboard", "dashboard.*"], exclude=["*.__pycache__"]
    )
    + ["camcore._bundled"],
    package_dir={"camcore._bundled": "assets"},
)
