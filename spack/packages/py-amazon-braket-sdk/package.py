# Copyright fluxqr developers.
#
# SPDX-License-Identifier: Apache-2.0

# ruff: noqa: F403, F405

from spack.package import *


class PyAmazonBraketSdk(PythonPackage):
    """Amazon Braket SDK for Python.

    A placeholder for a site's own installation of the ``amazon-braket-sdk`` PyPI package, which
    Spack's builtin repository does not carry (or carries too old for fluxqr): it is
    never built, only used as an external (see fluxqr's docs/admin.rst, "With Spack")."""

    homepage = "https://github.com/amazon-braket/amazon-braket-sdk-python"
    pypi = "amazon-braket-sdk/amazon_braket_sdk-1.88.0.tar.gz"

    # Placeholder versions for concretization: an external declares the real one.
    version("1.88.0")

    extends("python")

    import_modules = ["braket.aws"]

    @property
    def fetcher(self):
        raise InstallError(
            f"{self.name} is not built by Spack: pip-install {self.pypi.split('/')[0]} into "
            f"a virtualenv and declare it an external in packages.yaml, depending on that "
            f"virtualenv as python-venv (docs/admin.rst, \"With Spack\"; packages: {self.name}: "
            f"externals: [{{spec: {self.name}@VERSION, prefix: PREFIX}}], buildable: false)"
        )
