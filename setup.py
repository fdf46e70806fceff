# The only reason for a setup.py: the native block recorder (see src/runtrace/trace/_blockrec.c).
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "runtrace.trace._blockrec",
            sources=["src/runtrace/trace/_blockrec.c"],
            extra_compile_args=["-O2"],
        )
    ]
)
