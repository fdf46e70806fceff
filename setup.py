# The only reason for a setup.py: the native block recorder (see src/runtrace/trace/emulate/_blockrec.c).
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "runtrace.trace.emulate._blockrec",
            sources=["src/runtrace/trace/emulate/_blockrec.c"],
            extra_compile_args=["-O2"],
        )
    ]
)
