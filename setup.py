"""Build of the one compiled part: the certified EnSC solver's whole-dictionary start (``selfexpress/models/_pivot.c``).

Everything else is configured in ``pyproject.toml``. The extension is optional: without a C compiler the install
still succeeds and the solver runs the same method in torch (slower on the CPU; ``stats["pivot_kernel"]`` says
which ran).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("selfexpress.models._pivot", ["selfexpress/models/_pivot.c"],
                             extra_compile_args=["-O3", "-std=c99"], optional=True)])
