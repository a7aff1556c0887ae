"""ALR data: read both on-disk layouts (`layouts`), speak a small data set with espeak-ng (`synth`,
from `problems` or annotations), and prepare verl parquet rows in three modalities (`prepare`; the row
format and the embedded-audio decision are described there). `verl_dataset` is the verl dataset class
that decodes the embedded audio (trainer image only). Bad input raises `soundmind.errors.DataError`.

Nothing heavy is imported here, so `soundmind --help` stays fast in the operator image."""
