# Copyright fluxqr developers.
#
# SPDX-License-Identifier: Apache-2.0

# Spack recipes take their names (PythonPackage, depends_on, ...) from a star import.
# ruff: noqa: F403, F405

import glob
import os

from spack.package import *


class PyFluxqr(PythonPackage):
    """Flux Quantum Resources: quantum computers as first-class, schedulable resources
    in the Flux framework (flux-core + Fluxion/flux-sched): QPU vertices in Fluxion's
    resource graph, live device properties, hybrid classical+quantum jobspecs, and
    quantum sessions tied to job lifetimes."""

    homepage = "https://github.com/fluxqr/fluxqr"
    git = "https://github.com/fluxqr/fluxqr.git"

    license("Apache-2.0")

    version("main", branch="main")
    version("0.1.0", tag="v0.1.0")

    # One variant per vendor-SDK extra of pyproject.toml (pip install 'fluxqr[qrmi]' etc.).
    variant("qiskit", default=False, description="Qiskit adapter: Aer and IBM fake backends")
    variant("qrmi", default=False, description="QRMI adapter (IBM Quantum and other QRMI QPUs)")
    variant("qdmi", default=False, description="QDMI adapter through mqt-core")
    variant("braket", default=False, description="Amazon Braket adapter")

    # [build-system] requires
    depends_on("py-setuptools@61:", type="build")
    depends_on("py-wheel", type="build")

    # [project] requires-python and dependencies
    depends_on("python@3.11:", type=("build", "run"))
    depends_on("py-networkx@3.2:", type=("build", "run"))
    depends_on("py-jsonschema@4.18:", type=("build", "run"))
    depends_on("py-pyyaml@6.0:", type=("build", "run"))

    # [project.optional-dependencies]
    depends_on("py-qiskit@1.3:", type=("build", "run"), when="+qiskit")
    depends_on("py-qiskit-aer@0.15:", type=("build", "run"), when="+qiskit")
    depends_on("py-qiskit-ibm-runtime@0.34:", type=("build", "run"), when="+qiskit")
    depends_on("py-qrmi@0.26:", type=("build", "run"), when="+qrmi")
    depends_on("py-qiskit@1.3:", type=("build", "run"), when="+qrmi")
    depends_on("py-qiskit-ibm-runtime@0.34:", type=("build", "run"), when="+qrmi")
    depends_on("py-mqt-core@4.0:", type=("build", "run"), when="+qdmi")
    depends_on("py-qiskit@1.3:", type=("build", "run"), when="+qdmi")
    depends_on("py-amazon-braket-sdk@1.88:", type=("build", "run"), when="+braket")
    depends_on("py-qiskit-braket-provider@0.27:", type=("build", "run"), when="+braket")

    # Flux itself, with its Python bindings (and what they import: flux-core depends on
    # py-cffi, py-ply, py-pyyaml). Python broker modules need flux-core 0.84; the path-array
    # set_property RPCs need flux-sched 0.51. Tested with flux-core 0.88 and flux-sched 0.54.
    # Spack's builtin repository may stop below these: use the site's Flux as an external
    # (docs/admin.rst shows the packages.yaml). Also a build dependency: the install step
    # asks that flux where its shell initrc lives.
    depends_on("flux-core@0.84:", type=("build", "run"))
    depends_on("flux-sched@0.51:", type="run")

    # These import `flux`, which only Flux's own environment provides.
    skip_modules = ["fluxqr.agent.module", "fluxqr.flux.cliplugin"]

    @property
    def flux_prefix(self):
        """Where `fluxqr flux-install` writes the files through which Flux finds fluxqr."""
        return join_path(self.prefix, "share", "fluxqr", "flux")

    @run_after("install")
    def install_flux_files(self):
        """Write the flux qr command, the submit plugin, the broker module and the job
        shell plugin under share/fluxqr/flux, recording this Python and the installed
        site-packages (fluxqr's and its dependencies'), so they work without `spack load`."""
        # where pip really put it: a guess from the Python's scheme is wrong for Debian's
        inits = glob.glob(join_path(self.prefix, "lib*", "python*", "*-packages", "fluxqr",
                                    "__init__.py"))
        if not inits:
            raise InstallError(f"fluxqr was not installed under {self.prefix}")
        site = os.path.dirname(os.path.dirname(inits[0]))
        # Spack's build environment lists the dependencies' site-packages on PYTHONPATH:
        # flux-install records those too. Run it from the prefix, not the stage, so the
        # fluxqr it imports (and records) is the installed one.
        pythonpath = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)
        path = os.pathsep.join([self.spec["flux-core"].prefix.bin, os.environ.get("PATH", "")])
        with working_dir(self.prefix):
            self.spec["python"].command(
                "-m",
                "fluxqr.cli",
                "flux-install",
                "--prefix",
                self.flux_prefix,
                extra_env={"PYTHONPATH": pythonpath, "PATH": path},
            )

    def setup_run_environment(self, env):
        # flux runs <FLUX_EXEC_PATH>/flux-qr.py as `flux qr` and loads the --qpu options of
        # flux submit/run/batch/alloc from FLUX_CLI_PLUGINPATH. The broker module is
        # <prefix>/share/fluxqr/flux/modules/fluxqr.py (flux module load PATH).
        env.prepend_path("FLUX_EXEC_PATH", join_path(self.flux_prefix, "cmd"))
        env.prepend_path("FLUX_CLI_PLUGINPATH", join_path(self.flux_prefix, "cli", "plugins"))
