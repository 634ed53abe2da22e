# Copyright fluxqr developers.
#
# SPDX-License-Identifier: Apache-2.0

# ruff: noqa: F403, F405

from spack.package import *


class PyQiskitAer(PythonPackage):
    """Qiskit Aer: high-performance simulators for Qiskit.

    A placeholder for a site's own installation of the ``qiskit-aer`` PyPI package, which
    Spack's builtin repository does not carry (or carries too old for fluxqr): it is
    never built, only used as an external (see fluxqr's docs/admin.rst, "With Spack")."""

    homepage = "https://github.com/Qiskit/qiskit-aer"
    pypi = "qiskit-aer/qiskit_aer-0.15.0.tar.gz"

    # Placeholder versions for concretization: an external declares the real one.
    version("0.15.0")

    extends("python")

    import_modules = ["qiskit_aer"]

    @property
    def fetcher(self):
        raise InstallError(
            f"{self.name} is not built by Spack: pip-install {self.pypi.split('/')[0]} into "
            f"a virtualenv and declare it an external in packages.yaml, depending on that "
            f"virtualenv as python-venv (docs/admin.rst, \"With Spack\"; packages: {self.name}: "
            f"externals: [{{spec: {self.name}@VERSION, prefix: PREFIX}}], buildable: false)"
        )
