"""Install gdl: the plain-Python core and the Salt modules that sit on it.

The Salt modules stay in the source tree's ``_runners/``, ``_modules/`` and
``_clouds/`` so a master can also sync them from ``file_roots``; the wheel
carries them as ``gdl/_salt/<type>/`` and registers them with Salt's loader
through the ``salt.loader`` entry point, so ``pip install`` is enough.
"""

from pathlib import Path

from setuptools import find_packages, setup

SALT_MODULE_DIRS = {
    "runners": "_runners",
    "modules": "_modules",
    "clouds": "_clouds",
    "output": "_output",
    "engines": "_engines",
}

setup(
    name="gdl",
    version="0.1.0",
    description="Highly available web apps on OpenStack, provisioned the Salt way",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # gdl_harness: the throwaway Salt daemons and local clouds the tests and bench/ share.
    packages=find_packages(include=["gdl", "gdl.*", "gdl_harness"])
    + [f"gdl._salt.{ext_type}" for ext_type in SALT_MODULE_DIRS],
    package_dir={
        "": ".",
        **{f"gdl._salt.{ext_type}": src for ext_type, src in SALT_MODULE_DIRS.items()},
    },
    install_requires=[
        "salt>=3008.4,<3009",
        "openstacksdk",
        "pyyaml",
    ],
    extras_require={
        "tests": ["pytest", "pytest-xdist>=3.7", "flask", "gunicorn", "markdown"],
        "lint": ["ruff", "bandit"],
        # bench/run.py's failover plot.
        "bench": ["matplotlib"],
    },
    entry_points={
        "salt.loader": ["gdl = gdl.saltext:loader_dirs"],
        # The gdl command: gdl build|destroy|status|list (gdl/cli.py).
        "console_scripts": ["gdl = gdl.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Salt",
        "Operating System :: POSIX :: Linux",
    ],
)
