"""Regenerate the Kaldi matrix fixtures in this folder with Kaldi's own writer code.

    pip install kaldi-native-io   # Kaldi's table and compressed-matrix code, no Kaldi install
    cd tests/data/kaldi_matrices && python make_fixtures.py

Not a dependency of snnasr: the fixtures are shipped, and the tests check them against an
independent decoder (tests/test_ark.py) rather than against the library that reads them.
"""

from __future__ import annotations

import kaldi_native_io as kni
import numpy as np

# Two utterances, as in a feats.ark: 20 frames (compressed as CM by Kaldi's automatic method)
# and 3 frames (CM2 under the automatic method; CM's per-column quantiles with < 5 rows).
rng = np.random.default_rng(14)
big = (rng.normal(size=(20, 6)) * [1, 2, 3, 4, 5, 6] + [-8, -2, 0, 3, 7, 12]).astype(np.float32)
big[:, 5] = 12.5  # a constant column: the quantile header's degenerate case
small = np.array([[0.0, 1.0, -1.0, 2.5, 100.0, -3.25], [1, 2, 3, 4, 5, 6], [-1, 0, 1, 0, -1, 0]], np.float32)
MATRICES = {"utt_a": big, "utt_b": small}

METHODS = {
    "auto": kni.CompressionMethod.kAutomaticMethod,  # copy-feats --compress=true: CM for > 8 rows, else CM2
    "cm": kni.CompressionMethod.kSpeechFeature,
    "cm2": kni.CompressionMethod.kTwoByteAuto,
    "cm3": kni.CompressionMethod.kOneByteAuto,
}


def main() -> None:
    for name, writer, dtype in (
        ("fm", kni.FloatMatrixWriter, np.float32),
        ("dm", kni.DoubleMatrixWriter, np.float64),
    ):
        with writer(f"ark,scp:{name}.ark,{name}.scp") as w:
            for key, mat in MATRICES.items():
                w.write(key, mat.astype(dtype))
    with kni.FloatMatrixWriter("ark,t:text.ark") as w:
        for key, mat in MATRICES.items():
            w.write(key, mat)
    for name, method in METHODS.items():
        with kni.CompressedMatrixWriter(f"ark,scp:{name}.ark,{name}.scp") as w:
            for key, mat in MATRICES.items():
                w.write(key, mat, method)
    # Cross-check: Kaldi's reader and kaldiio decode every fixture to the same values.
    import kaldiio

    for name in ("fm", "dm", *METHODS):
        reader = kni.RandomAccessDoubleMatrixReader(f"scp:{name}.scp")
        for key, value in kaldiio.load_scp(f"{name}.scp").items():
            ref = np.asarray(reader[key])
            print(name, key, value.dtype, value.shape, "max |kaldi - kaldiio|", float(np.abs(ref - value).max()))


if __name__ == "__main__":
    main()
