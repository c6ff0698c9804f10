"""SYNTHETIC three-modality polysomnography (PSG) generator: the project's zero-download data set.

Nothing produced here is real physiology. A night is drawn in two layers:

1. **Latent physiology** (`latent.py`, with `hypnogram.py` and `events.py`): a plausible hypnogram
   with soft, jittered stage transitions; scored respiratory events and arousals; body movements
   and position; breathing (phase, rate, depth, event modulation); the heart (rate with
   respiratory sinus arrhythmia, arousal surges and apnea bradycardia, beat times, the
   breathing-driven swing of QRS amplitude and axis).
2. **One renderer per modality** turns the latent into channels: `render_eeg.py`, `render_eog.py`,
   `render_emg.py` (brain activity, BAS), `render_ecg.py`, `render_resp.py` (airflow, effort belts,
   SpO2). Each renders the shared latent, so a window's EEG, ECG and airflow share its breaths,
   beats, arousals and movements (`coupling="physiological"`); `coupling="none"` renders each
   modality from an independent latent as a negative control.

Per subject (`subject.py`), parameters vary (age-like factor, AHI, heart rate, coupling strengths,
gains, channel labels, missing modalities); per night, everything is re-drawn from a seed. Every
random choice comes from a `numpy.random.SeedSequence`, so the output is a pure function of
`(seed, subject, night)`. `files.py` writes EDF+ signals, EDF+/CSV annotations and a manifest.

The package rule holds: numpy/scipy only, never jax. See docs/synthetic.md for what is modelled
(with sources for the coupling magnitudes), what is not, the file formats and timing figures.
"""

from sleepfm_jax.data.synthetic.constants import (CHANNEL_SETS, CHANNELS, COUPLINGS,
                                                   DEFAULT_RATES, DISTRACTORS, EPOCH_SECONDS,
                                                   EVENT_LABELS, GENERATOR_VERSION,
                                                   MISSING_GROUPS, MODALITY, N1, N2, N3,
                                                   PHYSICAL_RANGES, REM, RESPIRATORY_KINDS,
                                                   STAGE_LABELS, STAGES, UNITS, W, parse_rates,
                                                   resolve_channel_set)
from sleepfm_jax.data.synthetic.events import POSITIONS
from sleepfm_jax.data.synthetic.files import (SYNTHETIC_NOTE, write_csv_annotations,
                                               write_dataset, write_night)
from sleepfm_jax.data.synthetic.latent import Latent, draw_latent
from sleepfm_jax.data.synthetic.night import SyntheticNight, generate_night
from sleepfm_jax.data.synthetic.subject import SubjectParams, night_seed, sample_subject

__all__ = [
    "CHANNEL_SETS", "CHANNELS", "COUPLINGS", "DEFAULT_RATES", "DISTRACTORS", "EPOCH_SECONDS",
    "EVENT_LABELS", "GENERATOR_VERSION", "MISSING_GROUPS", "MODALITY", "N1", "N2", "N3",
    "PHYSICAL_RANGES", "POSITIONS", "REM", "RESPIRATORY_KINDS", "STAGE_LABELS", "STAGES", "UNITS",
    "W", "Latent", "SYNTHETIC_NOTE", "SubjectParams", "SyntheticNight", "draw_latent",
    "generate_night", "night_seed", "parse_rates", "resolve_channel_set", "sample_subject",
    "write_csv_annotations", "write_dataset", "write_night",
]
