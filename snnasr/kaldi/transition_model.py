"""Kaldi's TransitionModel (the head of every ``final.mdl``), read without Kaldi binaries.

Alignments store one *transition id* per frame.  Turning them into frame labels needs only the
TransitionModel that opens the model file::

    <TransitionModel> <Topology> ... </Topology>
    <Triples> N  (phone hmm_state pdf) x N  </Triples>                    older Kaldi, or
    <Tuples>  N  (phone hmm_state forward_pdf self_loop_pdf) x N </Tuples>  newer Kaldi
    <LogProbs> ... </LogProbs> </TransitionModel>  <acoustic model ...>

Reading stops after ``</Triples>``/``</Tuples>``: the log-probabilities and the acoustic model
play no part in the mapping, and nnet3 models can be hundreds of megabytes.

Transition ids are numbered as Kaldi's ``TransitionModel::ComputeDerived`` does: 1-based, for
each tuple in file order one id per arc leaving that HMM state in the topology of the tuple's
phone, in the arcs' order.  An id's pdf is the tuple's forward pdf, except that the self-loop arc
(destination == source state) of a ``<Tuples>`` model uses the self-loop pdf; with ``<Triples>``
both are the same pdf.  :meth:`TransitionModel.pdfs` matches ``ali-to-pdf`` and
:meth:`TransitionModel.phones` matches ``ali-to-phones --per-frame``.

File encodings (Kaldi ``base/io-funcs``): binary files start with ``\\0B``; a token is its text
followed by one space; an int32 is a size byte 4 plus 4 little-endian bytes; a float is a size
byte 4 (float32) or 8 (float64) plus its bytes; an int32 vector is a size byte 4, a raw int32
count and raw int32 elements.  Text files are whitespace-separated tokens and numbers, and their
``<Topology>`` section has its own human-readable layout (``<TopologyEntry> <ForPhones> ...``).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np

from snnasr.io import DataError

NO_PDF = -1  # Kaldi's kNoPdf: a non-emitting (final) state
_SPACE = b" \t\n\r\v\f"


@dataclass(frozen=True)
class HmmState:
    """One state of a topology entry; ``transitions`` are (destination state, probability)."""

    forward_pdf_class: int
    self_loop_pdf_class: int
    transitions: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class TransitionModel:
    """Kaldi's transition model, with the per-transition-id tables Kaldi derives from it.

    ``topology`` maps each phone id to its HMM (list of states); ``tuples`` holds
    (phone, hmm_state, forward_pdf, self_loop_pdf) in file order (``<Triples>`` repeat the pdf).
    The ``tid_*`` arrays are indexed by transition id; entry 0 (not a valid id) holds -1.
    """

    topology: dict[int, tuple[HmmState, ...]]
    tuples: tuple[tuple[int, int, int, int], ...]
    format: str  # "Triples" or "Tuples", as the file says
    tid_phone: np.ndarray
    tid_hmm_state: np.ndarray
    tid_pdf: np.ndarray
    tid_self_loop: np.ndarray

    @property
    def num_transition_ids(self) -> int:
        return len(self.tid_pdf) - 1

    @property
    def num_pdfs(self) -> int:
        """1 + the highest pdf id, as Kaldi's ``TransitionModel::NumPdfs``."""
        return 1 + max(max(t[2], t[3]) for t in self.tuples)

    @property
    def phones(self) -> list[int]:
        """Phone ids the topology covers, ascending."""
        return sorted(self.topology)

    def pdfs(self, ali: np.ndarray, where: str = "alignment") -> np.ndarray:
        """Per-frame pdf ids of a transition-id sequence (``ali-to-pdf``)."""
        return self.tid_pdf[self._check(ali, where)]

    def phones_per_frame(self, ali: np.ndarray, where: str = "alignment") -> np.ndarray:
        """Per-frame phone ids of a transition-id sequence (``ali-to-phones --per-frame``)."""
        return self.tid_phone[self._check(ali, where)]

    def _check(self, ali: np.ndarray, where: str) -> np.ndarray:
        ali = np.asarray(ali, dtype=np.int64)
        bad = ali[(ali < 1) | (ali > self.num_transition_ids)]
        if bad.size:
            raise DataError(
                f"{where}: transition id {int(bad[0])} outside 1..{self.num_transition_ids} of the "
                f"model; the alignments were made with a different model: use that one"
            )
        return ali


def build_transition_model(
    topology: dict[int, tuple[HmmState, ...]], tuples: list[tuple[int, int, int, int]], fmt: str, where: str = "model"
) -> TransitionModel:
    """Enumerate transition ids as Kaldi's ``ComputeDerived`` does (see the module docstring)."""
    phone, hmm_state, pdf, self_loop = [-1], [-1], [-1], [False]
    for t_phone, t_state, forward_pdf, loop_pdf in tuples:
        entry = topology.get(t_phone)
        if entry is None or not 0 <= t_state < len(entry):
            raise DataError(
                f"{where}: transition state ({t_phone}, {t_state}) is not in the topology; the model file is corrupt"
            )
        for dest, _prob in entry[t_state].transitions:
            is_loop = dest == t_state
            phone.append(t_phone)
            hmm_state.append(t_state)
            pdf.append(loop_pdf if is_loop else forward_pdf)
            self_loop.append(is_loop)
    if len(pdf) == 1:
        raise DataError(f"{where}: the transition model has no transitions; the model file is corrupt")
    return TransitionModel(
        topology=topology,
        tuples=tuple(tuples),
        format=fmt,
        tid_phone=np.array(phone, dtype=np.int64),
        tid_hmm_state=np.array(hmm_state, dtype=np.int64),
        tid_pdf=np.array(pdf, dtype=np.int64),
        tid_self_loop=np.array(self_loop, dtype=bool),
    )


def read_transition_model(path: str | os.PathLike) -> TransitionModel:
    """Read the TransitionModel at the start of a Kaldi model file, binary or text.

    Raises DataError when the file is missing, is not a Kaldi model, or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model not found; give the alignment dir holding final.mdl")
    with open(path, "rb") as f:
        binary = f.read(2) == b"\0B"
        if not binary:
            f.seek(0)
        reader = _Reader(f, binary, path)
        try:
            first = reader.token()
        except DataError:
            first = None
        if first != "<TransitionModel>":
            raise DataError(
                f"{path}: not a Kaldi model (no <TransitionModel> at the start); give the "
                f"final.mdl (or N.mdl) of the alignment dir"
            )
        topology = _read_topology_binary(reader) if binary else _read_topology_text(reader)
        fmt_token = reader.token()
        if fmt_token not in ("<Triples>", "<Tuples>"):
            reader.fail(f"expected <Triples> or <Tuples>, got {fmt_token!r}")
        fmt = fmt_token[1:-1]
        tuples = []
        for _ in range(reader.count()):
            phone, state, forward_pdf = reader.int32(), reader.int32(), reader.int32()
            loop_pdf = reader.int32() if fmt == "Tuples" else forward_pdf
            tuples.append((phone, state, forward_pdf, loop_pdf))
        reader.expect(f"</{fmt}>")
    return build_transition_model(topology, tuples, fmt, where=str(path))


def _read_topology_binary(r: _Reader) -> dict[int, tuple[HmmState, ...]]:
    """Kaldi ``HmmTopology::Read`` binary branch: phones, phone2idx, then the entries."""
    r.expect("<Topology>")
    phones = r.int_vector()
    phone2idx = r.int_vector()
    n_entries = r.int32()
    separate_loop_pdfs = n_entries == -1  # the marker of the <ForwardPdfClass> extension
    if separate_loop_pdfs:
        n_entries = r.int32()
    entries = []
    for _ in range(_nonneg(r, n_entries)):
        states = []
        for _ in range(r.count()):
            forward = r.int32()
            loop = r.int32() if separate_loop_pdfs else forward
            trans = tuple((r.int32(), r.float()) for _ in range(r.count()))
            states.append(HmmState(forward, loop, trans))
        entries.append(tuple(states))
    r.expect("</Topology>")
    topology = {}
    for phone in phones:
        if not 0 <= phone < len(phone2idx) or not 0 <= phone2idx[phone] < len(entries):
            r.fail(f"phone {phone} has no topology entry")
        topology[phone] = entries[phone2idx[phone]]
    return topology


def _read_topology_text(r: _Reader) -> dict[int, tuple[HmmState, ...]]:
    """Kaldi ``HmmTopology::Read`` text branch (the layout of ``data/lang/topo``)."""
    r.expect("<Topology>")
    topology: dict[int, tuple[HmmState, ...]] = {}
    while (token := r.token()) != "</Topology>":
        if token != "<TopologyEntry>":
            r.fail(f"expected <TopologyEntry> or </Topology>, got {token!r}")
        r.expect("<ForPhones>")
        phones = []
        while (token := r.token()) != "</ForPhones>":
            phones.append(r.to_int(token))
        states: list[HmmState] = []
        token = r.token()
        while token != "</TopologyEntry>":
            if token != "<State>":
                r.fail(f"expected <State> or </TopologyEntry>, got {token!r}")
            if r.int32() != len(states):
                r.fail(f"states must be numbered 0, 1, ... in order (state {len(states)})")
            token = r.token()
            forward = loop = NO_PDF
            if token == "<PdfClass>":
                forward = loop = r.int32()
                token = r.token()
            elif token == "<ForwardPdfClass>":
                forward = r.int32()
                r.expect("<SelfLoopPdfClass>")
                loop = r.int32()
                token = r.token()
            trans = []
            while token == "<Transition>":
                trans.append((r.int32(), r.float()))
                token = r.token()
            if token == "<Final>":  # very old topologies carry a final probability; it plays no part here
                r.float()
                token = r.token()
            if token != "</State>":
                r.fail(f"expected </State>, got {token!r}")
            states.append(HmmState(forward, loop, tuple(trans)))
            token = r.token()
        for phone in phones:
            if phone in topology:
                r.fail(f"phone {phone} is in two topology entries")
            topology[phone] = tuple(states)
    return topology


def _nonneg(r: _Reader, n: int) -> int:
    if n < 0:
        r.fail(f"negative count {n}")
    return n


class _Reader:
    """Kaldi token and basic-type reader over a binary or text stream."""

    def __init__(self, f: BinaryIO, binary: bool, path: Path) -> None:
        self.f, self.binary, self.path = f, binary, path

    def fail(self, what: str) -> NoReturn:
        raise DataError(
            f"{self.path}: corrupt Kaldi TransitionModel near byte {self.f.tell()} ({what}); re-copy the model file"
        )

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            self.fail("unexpected end of file")
        return data

    def token(self) -> str:
        """Next whitespace-delimited word; in binary mode its one trailing space is consumed too."""
        c = self._read(1)
        while c in _SPACE:
            c = self._read(1)
        word = bytearray()
        while c and c not in _SPACE:
            word += c
            if len(word) > 256:
                self.fail("token too long")
            c = self.f.read(1)
        try:
            return word.decode("ascii")
        except UnicodeDecodeError:
            self.fail("binary data where a token was expected")

    def expect(self, token: str) -> None:
        got = self.token()
        if got != token:
            self.fail(f"expected {token}, got {got!r}")

    def to_int(self, word: str) -> int:
        try:
            return int(word)
        except ValueError:
            self.fail(f"expected an integer, got {word!r}")

    def int32(self) -> int:
        if not self.binary:
            return self.to_int(self.token())
        size = self._read(1)[0]
        if size != 4:
            self.fail(f"int32 with size byte {size}")
        return struct.unpack("<i", self._read(4))[0]

    def count(self) -> int:
        return _nonneg(self, self.int32())

    def float(self) -> float:
        if not self.binary:
            word = self.token()
            try:
                return float(word)
            except ValueError:
                self.fail(f"expected a number, got {word!r}")
        size = self._read(1)[0]
        if size not in (4, 8):
            self.fail(f"float with size byte {size}")
        return struct.unpack("<f" if size == 4 else "<d", self._read(size))[0]

    def int_vector(self) -> list[int]:
        if self._read(1)[0] != 4:
            self.fail("int32 vector with a bad element size")
        n = _nonneg(self, struct.unpack("<i", self._read(4))[0])
        return list(struct.unpack(f"<{n}i", self._read(4 * n)))
