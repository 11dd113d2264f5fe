"""Public RDM datasets by name: Algonauts 2019 (92 objects, 78 scenes) and Kriegeskorte et al. 2008.

Each dataset is described by a :class:`Manifest`: the published files with their pinned
SHA-256, where they are published, the areas (RDM file, key, subjects) and the stimuli.
:class:`PublicDataset` reads the files through the readers of the ``file`` dataset
(:mod:`plugins.datasets._readers`: stimulus folder, image decoding, ``.npz``/``.mat`` RDMs,
RDM checks) and returns a ``kind = "rdms"`` :class:`~framework.types.Dataset`.

Where the files come from, first match wins:

1. the ``data_dir`` parameter (``--dataset-param algonauts2019-92.data_dir=PATH``);
2. the environment variable ``FRAMEWORK_DATA_DIR``;
3. a download from the public source into ``<user cache>/downloads/<dataset>/``
   (:mod:`framework.downloads`, pooch; each file checked against its pinned SHA-256).

A local folder holds the files as released, e.g. ``PATH/algonauts2019/92images/fmri_IT_RDMs.npz``
and ``PATH/algonauts2019/92images/stimuli/image_01.jpg`` (``PATH`` may also be the dataset's own
folder, ``PATH/fmri_IT_RDMs.npz``); its files must have the pinned digests too, so the
same name always means the same numbers. The dataset digest is made from the pinned
digests, so it does not depend on where the files were read from.

Datasets (the RDMs are 1 - Pearson correlation distances, ``distance = "correlation"``):

``algonauts2019-92``
    Cichy et al. (2019), The Algonauts Project, arXiv:1905.05675 (data of Cichy, Pantazis &
    Oliva 2014/2016): fMRI RDMs of early visual cortex (EVC) and inferior temporal cortex (IT),
    15 subjects, 92 object images ``image_01`` .. ``image_92``. As redistributed by Net2Brain
    (Bersch et al. 2022) in its ``92images`` archive; released for research use by the
    Algonauts Project, cite Cichy et al. 2019.
``algonauts2019-78``
    The same release, 78 natural scene images ``image_01`` .. ``image_78`` (the challenge test
    set), EVC and IT, 15 subjects; from the Net2Brain repository (BSD-style licence of the
    repository). The ``fmri_T2_*`` files of Net2Brain's archive are not used: they are not
    documented, and over the same 78 images their RDMs do not correlate with these (Spearman
    of the EVC group means 0.07), so their row order or provenance is not established; the
    files used here reproduce the published noise ceilings (EVC 0.0640, IT 0.0647).
``kriegeskorte2008-92``
    Kriegeskorte, Mur, Ruff, Kiani, Bodurka, Esteky, Tanaka & Bandettini (2008), Neuron 60:
    1126-1141, as redistributed by rsatoolbox (``demos/92imageData``, MIT licence). Area ``hIT``:
    human IT fMRI, 4 subjects x 2 sessions, averaged over the two sessions of each subject
    (4 subject RDMs); it forms the headline. Area ``mIT``: monkey IT (674 neurons, Kiani et
    al. 2007), one RDM, a separate area of another species and recording kind, scored and
    reported beside the headline (no noise ceiling from one RDM). The human IT RDM of the
    paper's figure 1 is the group mean of ``hIT`` and is not loaded again. The stimuli are the
    92 images stored in the supplemental ``.mat`` (``stimuli_92objs``), written once as
    ``stim_01.png`` .. ``stim_92.png`` into the download cache, with their category labels.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framework import downloads
from framework.contracts import DatasetPlugin
from framework.errors import DataError
from framework.fileio import discard_dir, make_temp_dir
from framework.params import PluginParams, param
from framework.paths import expand_user
from framework.types import BrainRDMs, Dataset, StimulusSet, digest_of
from plugins.datasets import _readers as rd

log = logging.getLogger("framework.datasets.public")

#: Environment variable naming a folder with local copies of the public files.
DATA_DIR_ENV = "FRAMEWORK_DATA_DIR"
#: Bump when what a manifest yields changes (part of every dataset digest).
PLUGIN_VERSION = "1"
#: Version of the stimulus images derived from a ``.mat`` file (part of their cache folder name).
DERIVED_STIMULI_VERSION = "1"
_TMP_PREFIX = ".public-tmp-"

NET2BRAIN_COMMIT = "b59ed47dc88e3c120e43f5726ede126e902843e8"
RSATOOLBOX_COMMIT = "f1f83cadb7243492a1aae7460466e0f0140b20ac"


@dataclass(frozen=True)
class AreaSpec:
    """One area: the RDM file (a key of :attr:`Manifest.files`) and how to read it (as ``[rdms]`` entries).

    ``index`` keeps entries of the first axis and ``mean_over`` averages leading axes
    (after ``index``), as :func:`plugins.datasets._readers.to_rdm_stack`.
    """

    file: str
    key: str | None = None
    field: str | None = None
    index: int | None = None
    mean_over: tuple[int, ...] = ()
    species: str = "human"
    kind: str = "fMRI"


@dataclass(frozen=True)
class Source:
    """Where a manifest's files are published.

    Parameters
    ----------
    url : str
        Base URL of the files (``url + remote path``) or, with ``archive``, the ZIP's URL.
    archive : str, optional
        File name of the ZIP archive; None when every file has its own URL.
    renames : tuple of (str, str)
        ``(local prefix, remote prefix)`` pairs, first match wins: the path of a file at the
        source, e.g. ``("stimuli/", "stimuli_data/")``; ``("", "brain_data/")`` catches the rest.
    """

    url: str
    archive: str | None = None
    renames: tuple[tuple[str, str], ...] = ()

    def remote_path(self, local: str) -> str:
        """Path of file ``local`` (relative to the dataset folder) at the source."""
        for prefix, remote in self.renames:
            if local.startswith(prefix):
                return remote + local[len(prefix):]
        return local

    def url_of(self, local: str) -> str:
        """Where file ``local`` can be had, for messages."""
        if self.archive:
            return f"{self.url} (archive member {self.remote_path(local)})"
        return self.url + self.remote_path(local)


@dataclass(frozen=True)
class MatStimuli:
    """Stimulus images stored in a MATLAB struct array, written out as PNG files.

    ``file`` is a key of :attr:`Manifest.files`; ``key`` the struct array (n_stimuli,);
    ``image_field`` holds (height, width, 3) uint8 images, ``label_field`` a category name.
    Ids are ``<prefix><i:02d>`` for i = 1 .. n_stimuli, in the struct array's order.
    """

    file: str
    key: str
    image_field: str
    label_field: str
    prefix: str


@dataclass(frozen=True)
class Manifest:
    """Everything that defines one public dataset.

    Parameters
    ----------
    name, description : str
    folder : str
        The dataset's folder under a data root (``FRAMEWORK_DATA_DIR``), e.g. ``"algonauts2019/92images"``.
    files : mapping of str to str
        Every file read, relative to ``folder`` -> its pinned hex SHA-256.
    source : Source
    areas : mapping of str to AreaSpec
        In area order (early to late).
    headline_areas : tuple of str
    stimuli : str or MatStimuli
        A folder relative to ``folder`` whose images (the ``files`` under it, in name order)
        are the stimuli, or images stored in a ``.mat`` file.
    citation, licence : str
    distance : str
        How the RDMs were made (1 - Pearson: ``"correlation"``).
    """

    name: str
    description: str
    folder: str
    files: Mapping[str, str]
    source: Source
    areas: Mapping[str, AreaSpec]
    headline_areas: tuple[str, ...]
    stimuli: str | MatStimuli
    citation: str
    licence: str
    distance: str = "correlation"
    notes: Mapping[str, str] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        """JSON-serialisable identity of the data (files by digest, not by place)."""
        stimuli = self.stimuli if isinstance(self.stimuli, str) else asdict(self.stimuli)
        return {"name": self.name, "files": dict(sorted(self.files.items())), "stimuli": stimuli,
                "areas": {a: asdict(s) for a, s in self.areas.items()}, "headline": list(self.headline_areas),
                "distance": self.distance, "derived": DERIVED_STIMULI_VERSION}


class PublicParams(PluginParams):
    """Where to read a public dataset from."""

    data_dir: str | None = param(
        None, "folder with local copies of the published files, laid out as released (DIR/algonauts2019/..., "
        "DIR/kriegeskorte2008/...); default $FRAMEWORK_DATA_DIR, else download them into the user cache", key=False)


class PublicDataset(DatasetPlugin):
    """A public RDM dataset described by :attr:`manifest` (see the module docstring).

    Parameters
    ----------
    cache_dir : str or Path, optional
        Folder for ``file-digests.json`` and ``file-checks.json`` (remembered digests and
        image checks, as the ``file`` dataset); the framework passes the user cache's
        ``datasets`` folder. Downloads go to ``<user cache>/downloads/<name>/`` regardless.
    data_dir : str, optional
        Folder with local copies of the files; default ``$FRAMEWORK_DATA_DIR``, else download.
    """

    plugin_version = PLUGIN_VERSION
    Params = PublicParams
    manifest: Manifest

    def __init__(self, *, cache_dir: str | Path | None = None, **params: Any) -> None:
        self.name = self.manifest.name
        self._init_params(params, self.name)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    # -- public ---------------------------------------------------------------------------------
    def load(self) -> Dataset:
        """Read (downloading first if needed) and check the files; return the dataset.

        Returns
        -------
        Dataset
            ``kind = "rdms"``: per area ``(n_subjects, n_stimuli, n_stimuli)`` float64 RDMs, the
            stimulus images in file order, ``digest`` from the manifest's pinned digests.

        Raises
        ------
        DataError
            A file cannot be downloaded (offline: one line naming the URL, the cache path
            and the local-folder options), or a local copy is missing or differs from the
            published file.
        """
        m = self.manifest
        self._hasher = rd.FileHasher(self.cache_dir)
        checks = rd.FileChecks(self.cache_dir)
        try:
            paths, origin = self._files()
            stimuli = self._stimuli(paths, checks)
            rdms = self._rdms(paths, stimuli, origin)
        finally:
            self._hasher.save()
            checks.save()
        dataset = Dataset(name=m.name, stimuli=stimuli, digest=digest_of("public-dataset", PLUGIN_VERSION, m.key()),
                          rdms=rdms, area_order=rdms.area_order, description=m.description)
        log.info("Loaded dataset '%s' (rdms, %d stimuli, areas %s) from %s.", m.name, len(stimuli),
                 ", ".join(rdms.area_order), origin)
        return dataset

    # -- where the files are --------------------------------------------------------------------
    def _local_root(self) -> tuple[Path | None, str]:
        """The local folder to read from and how it was given, or (None, "") to download."""
        if self.params.data_dir is not None:
            return (expand_user(self.params.data_dir, f"{self.name}.data_dir"),
                    f"--dataset-param {self.name}.data_dir")
        env = os.environ.get(DATA_DIR_ENV, "").strip()
        if env:
            return expand_user(env, f"${DATA_DIR_ENV}"), f"${DATA_DIR_ENV}"
        return None, ""

    def _override_hint(self) -> str:
        """How to use a local copy instead of a download, for messages."""
        first = next(iter(self.manifest.files))
        return (f"Without network, put the published files in a folder DIR (as DIR/{self.manifest.folder}/{first}, "
                f"...) and set {DATA_DIR_ENV}=DIR or pass --dataset-param {self.name}.data_dir=DIR.")

    def _files(self) -> tuple[dict[str, Path], str]:
        """Every manifest file -> a local path with the pinned digest, and where they came from."""
        root, given_by = self._local_root()
        if root is None:
            return self._download(), f"the download cache '{downloads.downloads_dir(self.name)}'"
        base = root / self.manifest.folder
        first = next(iter(self.manifest.files))
        if not root.is_dir():
            state = "is a file, not a folder" if root.exists() else "does not exist"
            raise DataError(f"Dataset '{self.name}': the data folder '{root}' (from {given_by}) {state}; give the "
                            f"folder holding {self.manifest.folder}/{first}, ..., or leave {given_by} unset to "
                            f"download the files into '{downloads.downloads_dir(self.name)}'.")
        if not (base / first).exists() and (root / first).exists():
            base = root  # DIR is the dataset's own folder
        return {rel: self._local_file(base / rel, rel, given_by) for rel in self.manifest.files}, f"'{base}'"

    def _local_file(self, path: Path, rel: str, given_by: str) -> Path:
        m = self.manifest
        fix = (f"copy the published file there ({m.source.url_of(rel)}), or fix {given_by}, or leave it unset to "
               f"download the files into '{downloads.downloads_dir(self.name)}'")
        if not path.is_file():
            state = "is a folder" if path.is_dir() else "does not exist"
            raise DataError(f"Dataset '{self.name}': '{path}' (from {given_by}) {state}; expected the published "
                            f"file {rel} of {m.folder}. Fix: {fix}.")
        got = self._hasher.digest(path)
        if got != m.files[rel]:
            raise DataError(f"Dataset '{self.name}': '{path}' (from {given_by}) has SHA-256 {got[:12]}..., not the "
                            f"published file's {m.files[rel][:12]}...; it is a different or damaged copy. Fix: {fix}.")
        return path

    def _download(self) -> dict[str, Path]:
        m, hint = self.manifest, self._override_hint()
        if m.source.archive:
            archive = downloads.RemoteFile(m.source.url, m.source.archive, None)
            members = {m.source.remote_path(rel): sha for rel, sha in m.files.items()}
            got = downloads.fetch_members(archive, members, dataset=self.name, hint=hint,
                                          hasher=self._hasher.digest)
            return {rel: got[m.source.remote_path(rel)] for rel in m.files}
        return {rel: downloads.fetch(downloads.RemoteFile(m.source.url + m.source.remote_path(rel), rel, sha),
                                     dataset=self.name, hint=hint, hasher=self._hasher.digest)
                for rel, sha in m.files.items()}

    # -- stimuli --------------------------------------------------------------------------------
    def _stimuli(self, paths: Mapping[str, Path], checks: rd.FileChecks) -> StimulusSet:
        spec = self.manifest.stimuli
        if isinstance(spec, MatStimuli):
            return self._mat_stimuli(spec, paths[spec.file], checks)
        names = sorted((rel for rel in paths if rel.startswith(spec.rstrip("/") + "/")), key=rd._natural_key)
        ids = [Path(rel).stem for rel in names]
        stim_ids, files = rd.read_stimulus_folder(paths[names[0]].parent, ids)
        rd.check_stimulus_images(stim_ids, files, checks=checks)
        return StimulusSet(ids=stim_ids, paths=files)

    def _mat_stimuli(self, spec: MatStimuli, mat: Path, checks: rd.FileChecks) -> StimulusSet:
        """Stimuli stored in ``mat``, written once as PNG files into the download cache."""
        labels = tuple(str(x).strip() for x in rd.read_rdm_array(mat, key=spec.key, field=spec.label_field))
        ids = [f"{spec.prefix}{i + 1:02d}" for i in range(len(labels))]
        sha = self.manifest.files[spec.file]
        folder = downloads.downloads_dir(self.name) / f"stimuli-{sha[:12]}-v{DERIVED_STIMULI_VERSION}"
        for attempt in (1, 2):
            if not all((folder / f"{i}.png").is_file() for i in ids):
                images = rd.read_rdm_array(mat, key=spec.key, field=spec.image_field)
                self._write_images(folder, ids, images)
            try:
                stim_ids, files = rd.read_stimulus_folder(folder, ids)
                rd.check_stimulus_images(stim_ids, files, checks=checks)
                return StimulusSet(ids=stim_ids, paths=files, labels=labels)
            except DataError:
                if attempt == 2:
                    raise
                log.warning("Stimulus images derived from '%s' in '%s' are damaged; writing them again.", mat, folder)
                discard_dir(folder, _TMP_PREFIX, "stale")
        raise AssertionError("unreachable")

    @staticmethod
    def _write_images(folder: Path, ids: list[str], images: np.ndarray) -> None:
        """Write ``images`` (n_stimuli, height, width, 3) uint8 as ``<id>.png`` into ``folder`` atomically."""
        from PIL import Image

        folder.parent.mkdir(parents=True, exist_ok=True)
        discard_dir(folder, _TMP_PREFIX, "stale")
        tmp = make_temp_dir(folder.parent, _TMP_PREFIX, "stimuli")
        try:
            for sid, image in zip(ids, images):
                Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp / f"{sid}.png")
            os.replace(tmp, folder)
        except OSError as exc:
            discard_dir(tmp, _TMP_PREFIX, "failed")
            if not all((folder / f"{i}.png").is_file() for i in ids):  # else another process wrote them first
                raise DataError(f"Cannot write the stimulus images into '{folder}' ({exc.strerror or exc}); free "
                                "disk space or set FRAMEWORK_CACHE_DIR to a writable folder.") from None
        except BaseException:
            discard_dir(tmp, _TMP_PREFIX, "failed")
            raise

    # -- rdms -----------------------------------------------------------------------------------
    def _rdms(self, paths: Mapping[str, Path], stimuli: StimulusSet, origin: str) -> BrainRDMs:
        m = self.manifest
        rdms: dict[str, np.ndarray] = {}
        for area, spec in m.areas.items():
            path = paths[spec.file]
            what = f"RDMs of area '{area}' of dataset '{self.name}' ('{path}', key {spec.key!r})"
            array = rd.read_rdm_array(path, key=spec.key, field=spec.field)
            stack = rd.to_rdm_stack(array, len(stimuli), what=what, index=spec.index, mean_over=spec.mean_over)
            constant = np.flatnonzero(rd.constant_rdms(stack))
            if constant.size:
                raise DataError(f"{what}: subject RDM(s) {constant.tolist()} are constant, which the published "
                                "file does not have; delete the file so that it is fetched again.")
            rdms[area] = stack
        order = tuple(m.areas)
        info = {"source": origin, "n_subjects": {a: int(rdms[a].shape[0]) for a in order},
                "citation": m.citation, "licence": m.licence, **({"notes": dict(m.notes)} if m.notes else {})}
        return BrainRDMs(rdms=rdms, stimulus_ids=stimuli.ids, area_order=order, distance=m.distance, info=info,
                         headline_areas=m.headline_areas, area_species={a: s.species for a, s in m.areas.items()},
                         area_kinds={a: s.kind for a, s in m.areas.items()})


def _pins(table: str, prefix: str = "") -> dict[str, str]:
    """``"<sha256> <name>"`` lines -> ``{prefix + name: sha256}``."""
    rows = (line.split() for line in table.strip().splitlines())
    return {prefix + name: sha for sha, name in rows}


#: SHA-256 of the 92 object images (image_01.jpg .. image_92.jpg, 175 x 175 px, white background).
_STIMULI_92 = """
813ceb5e2796c2a35cb6247b34d76ca44c034e174543d9e08cbc829f56ba0c20 image_01.jpg
7f082b758c40ed87464ea007ed453011c4a0f4738ba59d82b689786be62834af image_02.jpg
1c80b55ff6b167fa6b7e7496a3586f0351607c42daeeab2cfe5dd560e576896f image_03.jpg
481f841e2bec5fc7e5292302b9b7fdf5f4c9d0bac839d7a4670d15413a545d47 image_04.jpg
247170db26641bb18f77a6d2143eb38d58cd30258247634323bb53527b88d969 image_05.jpg
acf1e19ab64d3e3392fa968834aae2520deb48ba7ac3a0ae5f2b039cff5b4e85 image_06.jpg
882a20b157fa1b6941f747226f9c85f46058d18128824c71698ceee01bc8dfe1 image_07.jpg
b61a524c83c229ea105a1c230e1d95473c4e137d27265d5e542f36f8264c5368 image_08.jpg
a1b11541cd5d87990886544e230d769f5127255b237cfb4fa4ceaed4500f132d image_09.jpg
1b17813e397fccada83381ca99820ce59c72c3c8051172c83bc1717452d01938 image_10.jpg
6c89747e88f992a5e01152bf483a3e0eb1a4a0dc93cfda33847beebd594867af image_11.jpg
2b3eccc332ec96f5f58018ed4a053a4d730ab175a54aefeaf06c086366f1f642 image_12.jpg
6229571b91b604354a879cd05c028376e00c2d220b826a73404a19d66e871d2b image_13.jpg
224b8fd979f187d0cf3a9f969763d134c319964a8776bc49ea44392e16b920ad image_14.jpg
60d678d7ea420d88deb82ed1e4e3d8779e23251f7b3c3b63a586f40a79427847 image_15.jpg
1a43b77d0a63710db6375756e1f0b90bf8692a2fa320deef1df13333611c6707 image_16.jpg
cb7042e5795dcc6db8b1cf67b37114616f28c48f7ac5dad610adb5ff87935f29 image_17.jpg
5b76b54e75b99f5f14307078ea69dc88fb5ffe741ada79b16f01576a4363308a image_18.jpg
79d0e5d627a567d23ee8f27c4a5b26f87680f084cb8a5b1246c0bb441680f693 image_19.jpg
a62e9bbf54c867843fb4cbf5897db75fd6ba64be2b17cd497d8f77023f3282b7 image_20.jpg
63e4249f81cecd2fbf025e2734b24a974507fa8e22e30551a0579b0885f02c07 image_21.jpg
1ee3fdef0abb94d61f6157f16d64c26d505bbcfa78b131c64e80ef7bd8621757 image_22.jpg
d5b95d51cb07b61879cc513309a3d8e51a35260186fce8a703bd175cf711bcb4 image_23.jpg
cc23e9693601ba43319e92996a2d8cc186a780b3818229b0f9a141f12fa89a75 image_24.jpg
b63e24103caf83d0468d85eeefdd3af4d19f12a513086ec7ebf31c20180879e1 image_25.jpg
bb16e6b836de1ba28608824407a1f1870d688c1a71972e653b6e0217f6c51f4e image_26.jpg
3e10787cf3e2e9a2ae5c57f857254b2b5227bc32f63c7808af176fe30c15fd97 image_27.jpg
140fbeb9d802c7b785da77cb620b1d342b3d75a576bccec7e479779a7ace5315 image_28.jpg
dc0d64cc57df578b4153f22a3ade0866a5cbbc9158fdb232d6bddf21e4b37ed3 image_29.jpg
0e8afc601d4c9f1176bce05965362b5549a5bb4e6aaa3d0d5b971765ef652b78 image_30.jpg
c2994432103db5f372f8eeebe7d87607c31f932fa10c2ee0e9bedc9501718039 image_31.jpg
5a560bade8222ac1bcb9d83ef72875f9bce6382052b78087a483595f3d064d94 image_32.jpg
3d7b14e9d4e6080dbfa2441fc5bf618e8314d6d770cf07394a8b1963328fc4d3 image_33.jpg
c18dbbe8bf63ed12fa9c2dd2c16dbc54ca5dd6c07fb92cb34c233d379c5b4818 image_34.jpg
de0eea831cc43823dee502df8441617216f153a07d099846a841cfbae42d6c7e image_35.jpg
b0f1b64f00b182158c8ff5d72d1bfb0248a5d7d556968f3784b26212a5448dfd image_36.jpg
b12bd143165b2ee8a68f5c7357219ffce5a1f0f025dc06fb41970174c78a49f9 image_37.jpg
74b3cd008d0b23254873971e153f4c9a83fd1b3747cb34befe6fc075adc78574 image_38.jpg
8e45a0d98c44aac34a3deafe1fad16e8d1c442f233a9a042174bb72efde4714d image_39.jpg
4b2e5f14e1fd0e4d8d2d33827aa32faa5670cea06725609e53ce54795fede416 image_40.jpg
699ed191b2c9d565a3eaf4d0e0d67a338610def5f3ae653cc9bbcb0508302e2a image_41.jpg
190008cf1ebbd92d5766e961206d842421770d8844ee9311c2fdc182d288b314 image_42.jpg
f7da5a8bb04fea81cc7783eb440ca9dfc8aba9543939e47d2b11323f9f8e03f2 image_43.jpg
f2237288f679651249c7304eef9e05d1173d0ecc790b707bbb8dbce35ef41d65 image_44.jpg
998847d3b3829337c90147a53583f475ecb7455e40f08f448cb6afd2597eb513 image_45.jpg
c44a1bcca8cfd3d433a2334b5dd4d598385c9b240760b861df59508a83aa5724 image_46.jpg
4a7bb292f99864867f7d588c782e63273a03d37d44db0e8156def8bd42b319b2 image_47.jpg
270383b041466ea413ea675c15e5674e10a6a429c23d099a88c6ba37778b1a95 image_48.jpg
dafc2059b8339c23c83d45e24600eb718cec3462f9bf5d1e0584c1fcfd60f6fc image_49.jpg
18201ad6dbb4dbfec687632d59fee6acc1d6e0febee8a7e1a086d36753fb752d image_50.jpg
aa718bee0f2eca5b835623a989076d27054bdf1edb2b5f6075aad40a297c0766 image_51.jpg
e45f370a82c4871ba2471eeeee4f95e59d12af0279db8c79b2e007c46383884b image_52.jpg
fac80c006e90fdb3c79608c6af9dd2f7ffd49df5883076afc60f95b5f8c6668c image_53.jpg
70f61070355c42828f06c3ccec9187f4496bb238c27177ba2e90adf17c22aa15 image_54.jpg
dc5e1eff2d9c8fb788e5b2d5cc507a0520668f3020abf7f49d2f09ea1fe691e2 image_55.jpg
4d24f3a4c6bc561268e4bacedee69f8aa017d3e6b18f39f1616572c32ce5281c image_56.jpg
edd966c8788815c2f9d2acc54ddfbfe65ff62dc434e4e27ff6382a21cb032907 image_57.jpg
15a0ebc7a85796f73c535a7066de5f3248210e1c4d8f00ed13b625e20b6629a0 image_58.jpg
ea9f81ee7ca4edcac7018893820b89cf5c0480002cdeff56b9c824744f9af545 image_59.jpg
6269b5d9857138940c24c3dc0b0f551fb6b12e23bfe85280eb04b7cea62136d0 image_60.jpg
78ab86cfb7b980a8395774f8efda8f8545de478b4c72ee7bcc351133d5a0a750 image_61.jpg
1db868133eb47ffaa54d3846c0be0d72380a60b349973d311e22470d87b9d354 image_62.jpg
6666b9b85b6c89cd2798316a62186679c158a943796cdc19f4c059fa2f111fc0 image_63.jpg
179af5ad589037b8fdb73666816bb9d1dc1601d056b8e25d4bb91a3e376d11d0 image_64.jpg
c956044d431d257e7c89303c0f0ee917132d8f91504d82827012ee8f2f16381f image_65.jpg
1573e34e8c55ae2020779b369ac25149be079da83b29c478f82c1625bc99644a image_66.jpg
314de91f3eee824b0bfc7e77569f1de0e72d039d57e8a6cda8085331e32c28ff image_67.jpg
d6e0663a430e263662ca743117ee3d36cfcc93ac429193fc7d7a98ea873f600a image_68.jpg
8a2fba6ab7ea576aa1f8eef94e5f83bf74d40b8306bec7ac0903c98b437f5438 image_69.jpg
6dda4980e1f8b4b752b09937460388dc26962371c1cd87109782ede0d73267d0 image_70.jpg
d763d916871a61633bcda55b089286349506bc262867c2e5b88d5cf86421f520 image_71.jpg
e062f2e0efe484712e35c45808997211b486ef9b30fa56b1625be49f68891844 image_72.jpg
b9ad506d7b79844a299d5c2688cfeffacfaa90009c094cb6415f42eee9e14aa2 image_73.jpg
a33d8c33c0fbcc9b99ed92af9c2418edcb1d7a64ef10997d66546ce527001d8b image_74.jpg
33bd7b920b6c787d3e89cc9f355b0cecfd5ccd0f3b3e7a9265d38000cee2997d image_75.jpg
ea15645da12fda3d991922885e9544de8adb74f2f1bb25ad7b5dbc79e1f16117 image_76.jpg
65e3237d0e07339992d1936221cf52cc059884982079fc3f8451b1be8cbda7bb image_77.jpg
7113be3c3e91bfe4fccb5a167392bdadcecc772f3d264a74b306d7baa00d6be4 image_78.jpg
42e8b3bfec5dd0807389261fab34b852e63928f60de3e53502324a84c43d013c image_79.jpg
bb99dc34ad5a79dbee8477d8b96efb12cf811fd22c3e4898c331de74737d4604 image_80.jpg
ed979bc8caefbd039003d9018a25df8c79568942357fbd3a1d5ad5d26165162a image_81.jpg
ac49c8b3cbd5f744f30a03246088c9a9131815d1af87e7748642f656302f325f image_82.jpg
03d7510027777e72967de7ae822679c1121266b468b1cf011977b59c39f71f66 image_83.jpg
e53063da752f11df50fe5ffabea63dbc94b6474b77d320664deea3cb4c6939d9 image_84.jpg
83a55041dfe8f0c0084a5658e75a27caacf3eebbc8f5d876be2517ac927da8c9 image_85.jpg
8220813089402e9a52288c3f3b8c990b9cc74b9f37c00f1135d22062a73c8038 image_86.jpg
b9dccbb37363370fd020cd4cfa98d59323f6413bc50f2ff3d266028e6081a2b9 image_87.jpg
a56f0e0f2c977f2d4e7b81bd70297d19d46818a94dde25d4b78a83253f65ff52 image_88.jpg
475818ad38c8d2e86182631279cc316c9b4ed770bdf0a704b963f5318758ecc3 image_89.jpg
6bbf3438d4e36076bbae5c074fceb5d9c12c96799f56dc91e70e4f41a1c09c5e image_90.jpg
3164e125b24f434483c6d6bedba279c6442b11a560780290748ba18a4839d158 image_91.jpg
ea705df5b9c5e516975355438bd0ad4f7edc21dfe85211807565531be18d3fe1 image_92.jpg
"""
#: SHA-256 of the 78 scene images (image_01.jpg .. image_78.jpg, 400 x 400 px).
_STIMULI_78 = """
30d2e63e5d7a68dac3df99e0cbc4844df44ef4a7f6fe0e0d4ac5baa6d32ea019 image_01.jpg
8bdd5e4b246ca79df9f692b4103daf29dcb707a1e0f029c47fdb7a9d1a334e74 image_02.jpg
e21b0e582660eab7116d0629ace1bc1e9d01c20668f4b3ace99c4a6c5bcbbc0c image_03.jpg
8a0302a12f94551d341a01e76a30f614dccedb2a50b878444577958fd6ce87c7 image_04.jpg
efe100e81b0bc2fe625aa3c56bc98ec6da838ff6f2d329a74ca215590c71f670 image_05.jpg
e8f92df94aeb33b326b069b3ef1ffaed457f5b28357f3b3c3d35f7c6ff63b9b5 image_06.jpg
2bc8aaca8c63312fd1d853d261a718f22411a2fe7c279544e13aa33a15edfccb image_07.jpg
d2acfc929c7f2a6c46f9e637ada958ea944b09a005e3455b6231237d1603ddae image_08.jpg
64c3f778e5e5258510a176d8be35d72e183dd1dbf7470f439d077c94a3baa978 image_09.jpg
661755225248093c573ca60272f9f274edced7ad2cf5664e3f8166097600536e image_10.jpg
d1b91740632811e54a5e995ba90acb67e1db54f790ebe8fbd597aadfa208c2af image_11.jpg
ed021fdeddffb68708193902e31c85702a4147e381623d015b6ed63f734f7d62 image_12.jpg
29e122b5979d45dde7e6a61df32d9d64aa3ff70c034bb38d048ee783df8d028e image_13.jpg
60a8cbb13997afa0b78df4fbcfd8f312197177dfe86c3f73d31dde54b08c4aae image_14.jpg
9e944f16cd4bdabd073012bc29c90558cfbc8fb6069336680fa96359e60497a7 image_15.jpg
3c602eeab4e924216984f07620f233075a361428a1f78012c33ae789b8f3b9ba image_16.jpg
3a1b90ce18586be23759ebd312734efa2ce50675dc60e5af0bfd2f5b08b37783 image_17.jpg
f7a936c4b96ee88eb5e155fe49385eea8afc303c18e07adce6824890e9b1415c image_18.jpg
c0bf5efb685e1cffce8d9befee11293fddb89b2899181589b73e96c76b26ac58 image_19.jpg
098c7401b32026b9a0ac82e8e02071a825b5ed8ab12b22082be1d3be8291f5b1 image_20.jpg
80cf9cf6c409195e5ca33eb297e64943c2d4f26baa1cdb0f0337d643ca5a7933 image_21.jpg
c93b9ecd9a909a807be888e915370764925b5b2e5d23ef69e236051e8d413950 image_22.jpg
66140db09d983f1e4a5b5f0d4fdad4d900b8a6715b185c0bee436593c73a6bb2 image_23.jpg
1c623db6c45a955225f20c43e4cf0f39d4d39a272837458c17eca40bc902b8c5 image_24.jpg
611586d40d970867060eddeefd3fe70177ba8d89f132514dde27ee48f6487436 image_25.jpg
3e0ac4d060203e9d00a04162ccc6ba9b655893c414dcd4ac4ab42f091be80e02 image_26.jpg
84899e20ce2363f9b2803054cf0684464f43dcae4bb1a238334b1e0eb8677cf8 image_27.jpg
2d74dca48370a72f6b3f6fd5b6e82324f1d32bfb83c369ac23c10858b81d7e46 image_28.jpg
231765321c8c8add4fc1b2c6c19dc8a6d49c1c518ccfaae15fc88a0845096162 image_29.jpg
d348716e6ef1e80482118f956b1c1c70af19d4ffd21b4687b315d7144ba9ffbf image_30.jpg
a535df4798ca442c164cf89c15f1c0f4af99e488611a14ef93ad5133c346b712 image_31.jpg
32c69937f56206e9575c16c8ccf9b82280772c6677bc3a9e177c7ed73baeab1a image_32.jpg
17e19ccc96daa3bd6bcb0853ffa38ecd3b21b3e7df00231e2bdb98fece3e3d88 image_33.jpg
154687874955ab87b081641c217545414b63aa306996d5aa5654238a498fcd2b image_34.jpg
472dc5e216beced4f21100f2630c1c428c04c267c61ebd3c7260781debeedcea image_35.jpg
dbbc72aa836595c7be5f29e124b2cb5948b649702427a2d9141d1bdb54a3c8c0 image_36.jpg
c4972b7c00b1cb1d5cd1c5a37a9404bffc8611f80f745f35c12a80c8a1b3d627 image_37.jpg
9894cdc20966804c5ca41168b3e14343c349967b00ab9373e5e0aa0843445097 image_38.jpg
63884bc6464ee6ca907e486a2a870507bdcb278ea1da770659395e3d15cc6e27 image_39.jpg
e58175c1b5d244da0fc3c177e1bffe416667bf37fd78425de473f28320d3cddf image_40.jpg
8d5abb0537b689a4417cf8735c00eda0487c4fc199e68dff545ed8e7dd2ea4f8 image_41.jpg
406dea4d8357fd5fa2ed5e6ccc4ce69aa787fa77a20f41a4c230bbfebad5b285 image_42.jpg
fd804caecb0ee326be1d36ee914a725cb11622ce6adafb324bf3a7cfaf4298fd image_43.jpg
012ab3f8cb59de177b3e30563006559d8542ea8aa486477c9dba552cf910e70a image_44.jpg
74167b576ed5907a4f52d11535a6020982a1162245739564290d8fce44eab6ed image_45.jpg
c9c90a1540378d97a2229f1297c08ef22a2cca131f3df594ad1f9da4e48ebfae image_46.jpg
bcb75e20935ad5bb501714ba7e4248928e3ad1c0279cfb033ef4676dea260ce8 image_47.jpg
f787e42ca5490392aaacf058f5ef10833b1aecee365e544bc24aa5766aebd90e image_48.jpg
1e0391f9c522dd1c1ac4e86a4fdaad943aa83427dc0c0ad45ba96f67f73d5458 image_49.jpg
d41e40fe5d5e6a15ac117c24b85c33c3747cae610dc94c8925beb5804eebc585 image_50.jpg
dadf1804b90ad9365ed3ee3f8f89c452dd45c82be857f41892e9d5e8a6821656 image_51.jpg
f460f4cc520243643cdcce62382629a6697eeb6bb10105ad6337c522c66c64a2 image_52.jpg
56ff677b9bec4ce199f39540e7efad4ddebf5fc1e8d7e679602afa961fd59ab3 image_53.jpg
981d0d8348e31775070bddc86370567b2ef1184e030956ca380e5080942a7e7e image_54.jpg
90eceddef2987516b984ab28c1ceecbcf4b5e1b2313ab83217ab8f3c33c47ff7 image_55.jpg
098d68d548eebf0a1b421d2a6e76f2f8d67856e34091c2290c89a95141ebea82 image_56.jpg
861949cb3be70fd21f03989fbe647e6aeb43543bedf002e9acee63f2801624e9 image_57.jpg
8a79a2d4c33f91085e066d6c27e8cd27d248c1d219fa9d9c8936d203cbc8edb9 image_58.jpg
61be7db14c7c4e23547bbbbe535aaaa156ed0e65feb50feefff1476e22c352ac image_59.jpg
9ce1f6fa2b8f491eebb682d4eb77d3fbec52e8e6a59065362dc7e29a8208303f image_60.jpg
536ae8c253c88598c8d698e7a4460c9531ab288aa182bdcc97a4be3f5cbae2ab image_61.jpg
6ce5d46c5823f24f8d94ad0623e3f1b9869103c017e5caa878bfa8166c8082c2 image_62.jpg
863014cc72df5501af25b21058e39e8a90413d55f35a2b7b9da8a5891d4e8dc3 image_63.jpg
b8741d57815d71c14c32920e2dc133631e155d6f88d7350c4b51c5db6d00d082 image_64.jpg
bfe4fd1fab9e49a9810865cc7d908a74720e8d04a43092782d98d077facc7074 image_65.jpg
9f26ab2ebb9f8385b22450ceff22a8d0072c2d87a307e8aa94345c2af796d3c2 image_66.jpg
b9678d61f18554bdfd040c43369247c12101a6f543cbd91ea5c8931525de9aa2 image_67.jpg
060fbf6553dc36acc36a5c5e67c7f7bb571910022bb65fc6495a28d566d26adf image_68.jpg
0653eb4d3cb6e50cdb0b993e31a2824157ca3bf2f8cc93cde9fd85eff9fa7254 image_69.jpg
a8aa6b7efbf8642045602571845ff19d1f01b85d017481d7b304e3e5ae63903c image_70.jpg
3320f26bc6419dd5418215fdb9595bb47e8ecbc8afcff11001c8ff595f270518 image_71.jpg
e483a537c73d5f1e4011d945a4d2524d168317203a253983c5598f573cacaae7 image_72.jpg
2225be5d234e9329c2c359f6360ea8d25f552032e5b463dffa94520869724e5f image_73.jpg
f25fe54e6f45ca150f40ab9fc7763c159d56597b7a4ce65d64dbe5c668c37173 image_74.jpg
043dc44085d5d76f9180752c218ac69c20602771ceb65d3c4f0359ee65c4e585 image_75.jpg
94ea5cd15126c4370b891e5e289067f2a85737f307dc63ec906775018f358cc7 image_76.jpg
d9ce76da3c236653ea77378e7d7739ff594220323abe49c38e1100431aa7e2b8 image_77.jpg
2d4ae82b61345cee476fe705c799d3379ad8d1ebc41ed40e0d9564ea99172ee5 image_78.jpg
"""

_ALGONAUTS_CITATION = ("Cichy RM, Roig G, Andonian A, Dwivedi K, Lahner B, Lascelles A, Mohsenzadeh Y, Ramakrishnan "
                       "K, Oliva A (2019). The Algonauts Project: A Platform for Communication between the Sciences "
                       "of Biological and Artificial Intelligence. arXiv:1905.05675")
_ALGONAUTS_LICENCE = ("Algonauts Project 2019 release, for research use (cite Cichy et al. 2019); redistributed by "
                      "Net2Brain (github.com/cvai-roig-lab/Net2Brain, BSD-style licence)")
_NET2BRAIN_RENAMES = (("stimuli/", "stimuli_data/"), ("", "brain_data/"))

ALGONAUTS_92 = Manifest(
    name="algonauts2019-92",
    description="Algonauts 2019: fMRI RDMs of EVC and IT, 15 subjects, 92 object images",
    folder="algonauts2019/92images",
    files={"fmri_EVC_RDMs.npz": "c73de20f9cb2229f1796085e79c153f63a4287b8bf7faaf7531571b1898d3f8b",
           "fmri_IT_RDMs.npz": "ecf104457ae841d2a2bf503fb0dc16c6387e32d0cd74fb5217ca4ef859a805dd",
           **_pins(_STIMULI_92, "stimuli/")},
    source=Source("https://next.hessenbox.de/index.php/s/QTENpN3Cozk5x9Q/download", archive="92images.zip",
                  renames=_NET2BRAIN_RENAMES),
    areas={"EVC": AreaSpec("fmri_EVC_RDMs.npz", key="Net_RDM"), "IT": AreaSpec("fmri_IT_RDMs.npz", key="Net_RDM")},
    headline_areas=("EVC", "IT"),
    stimuli="stimuli",
    citation=_ALGONAUTS_CITATION,
    licence=_ALGONAUTS_LICENCE,
)

ALGONAUTS_78 = Manifest(
    name="algonauts2019-78",
    description="Algonauts 2019: fMRI RDMs of EVC and IT, 15 subjects, 78 natural scene images",
    folder="algonauts2019/78images",
    files={"fmri_EVC_RDMs.npz": "c927ba9793234c4bf4845320ac66fbfbe85ec9afc4df9b12ca2a006dae753672",
           "fmri_IT_RDMs.npz": "b27cc1c7f87428516fabb4a67e0c1aafe3e6a7de4667e35b5b141e3582e53900",
           **_pins(_STIMULI_78, "stimuli/")},
    source=Source(f"https://raw.githubusercontent.com/cvai-roig-lab/Net2Brain/{NET2BRAIN_COMMIT}/net2brain/tests/data/",
                  renames=_NET2BRAIN_RENAMES),
    areas={"EVC": AreaSpec("fmri_EVC_RDMs.npz", key="arr_0"), "IT": AreaSpec("fmri_IT_RDMs.npz", key="arr_0")},
    headline_areas=("EVC", "IT"),
    stimuli="stimuli",
    citation=_ALGONAUTS_CITATION,
    licence=_ALGONAUTS_LICENCE,
    notes={"T2": "fmri_T2_EVC/IT_RDMs of the Net2Brain archive are not used (undocumented; uncorrelated with these)"},
)

KRIEGESKORTE_92 = Manifest(
    name="kriegeskorte2008-92",
    description="Kriegeskorte et al. 2008: human IT fMRI RDMs (4 subjects) and monkey IT RDM, 92 object images",
    folder="kriegeskorte2008",
    files={"92_brainRDMs.mat": "1743f90a15e895798a94318649e80e1123a7e5943a1703fa1dd7c31ea5780b7c",
           "Kriegeskorte_Neuron2008_supplementalData.mat":
               "06f21214399a5d43dc264eed19a7f4b8daf11c8622a59eec3e106064ce5e3504"},
    source=Source(f"https://raw.githubusercontent.com/rsagroup/rsatoolbox/{RSATOOLBOX_COMMIT}/demos/92imageData/"),
    areas={"hIT": AreaSpec("92_brainRDMs.mat", key="RDMs", field="RDM", mean_over=(1,)),
           "mIT": AreaSpec("Kriegeskorte_Neuron2008_supplementalData.mat", key="RDMs_mIT_hIT_fig1", field="RDM",
                           index=0, species="monkey", kind="electrophysiology")},
    headline_areas=("hIT",),
    stimuli=MatStimuli("Kriegeskorte_Neuron2008_supplementalData.mat", key="stimuli_92objs", image_field="image",
                       label_field="category", prefix="stim_"),
    citation=("Kriegeskorte N, Mur M, Ruff DA, Kiani R, Bodurka J, Esteky H, Tanaka K, Bandettini PA (2008). "
              "Matching categorical object representations in inferior temporal cortex of man and monkey. "
              "Neuron 60(6):1126-1141"),
    licence=("redistributed with rsatoolbox (github.com/rsagroup/rsatoolbox, MIT licence); cite Kriegeskorte et "
             "al. 2008"),
    notes={"hIT": "4 subjects x 2 sessions; the two sessions of each subject are averaged",
           "mIT": "one RDM (674 neurons): no noise ceiling; reported beside the headline"},
)


class Algonauts2019Objects92(PublicDataset):
    """``algonauts2019-92``: Algonauts 2019, 92 object images, EVC and IT (module docstring)."""

    manifest = ALGONAUTS_92


class Algonauts2019Scenes78(PublicDataset):
    """``algonauts2019-78``: Algonauts 2019, 78 scene images, EVC and IT (module docstring)."""

    manifest = ALGONAUTS_78


class Kriegeskorte2008(PublicDataset):
    """``kriegeskorte2008-92``: human IT (4 subjects) and monkey IT, 92 images (module docstring)."""

    manifest = KRIEGESKORTE_92

