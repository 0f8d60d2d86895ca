"""The trainers' one door to data: config.dataset resolved once into a DataSource (its facts, view plans, steps,
batches), made by `readable_source` (runner: the data made readable first) or `resolve` (genscl_jax.data.source).

Importing this package imports no TensorFlow (see genscl_jax.data.source). Of genscl_jax it imports only runtime;
trainers (and runner, for `readable_source`) import it.
"""

from genscl_jax.data.registry import DataError as DataError  # What runner turns into the one-line `error: ...`.
from genscl_jax.data.registry import DatasetInfo as DatasetInfo
from genscl_jax.data.source import DataSource as DataSource
from genscl_jax.data.source import TrainingInput as TrainingInput
from genscl_jax.data.source import download_needed as download_needed
from genscl_jax.data.source import readable_source as readable_source
from genscl_jax.data.source import resolve as resolve
