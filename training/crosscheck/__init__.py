"""crosscheck: a second, independently written generator of mine seismic signals.

Written from the published seismology alone, to measure how well models trained elsewhere
generalise. Only numpy and scipy. Entry points: ``generate_windows``, ``generate_stream``,
``write_dataset``.

Physics choices
---------------
Sources. A microseismic event is a point moment tensor with a Brune (omega-squared) far-field
displacement pulse, u(t) = t exp(-t/tau)/tau^2, whose spectrum 1/(1 + i f/f_c)^2 falls as f^-2 above
the corner. The S corner follows Brune, f_c = 0.37 beta (16 dsigma / 7 M0)^(1/3) with M0 = 10^(1.5
Mw + 9.1) N m; the P corner sits 1.2-1.7 times higher. Magnitudes are drawn half uniformly (every
size represented) and half from Gutenberg-Richter with b = 1 (small events dominate). The tensor is
a random double couple, an implosive closing crack -(lambda I + 2 mu n n') with a little double
couple (stope and pillar closure: P compressive nowhere, so the first motion is dilatational in
every direction), or occasionally an opening crack. The P amplitude on a ray gamma is gamma'M gamma
along gamma; S is the transverse part of M gamma. Far-field amplitudes scale as 1/v^3, so S is about
(vp/vs)^3 ~ 5 times P for equal radiation, yet near an S nodal direction P dominates. Each phase
travels with a causal constant-Q operator exp(-pi f t*) (t* = travel time / Q + a small near-sensor
kappa, with the logarithmic dispersion of a causal Q), so the observed peak falls below f_c, and is
followed by an exponentially decaying scattered coda with the same spectrum, less polarised than the
direct wave. One window in seven holds a second, smaller event of the same cluster.

Blasts repeat one compressional pulse through a delay pattern: underground rounds fire 3-15 delay
numbers 17-100 ms apart with 1-3 charges each; surface benches fire rows and holes for up to several
seconds. Pyrotechnic scatter (1-4 ms) or electronic precision, misfires, charges that couple better
as confinement builds (a gradual rise), weak S, monotonic coda decay; a quarter carry an air blast
arriving at the speed of sound, low in frequency. Percussive drilling is an impulse train of 20-60
blows per second (8-45 in the low regime) with jitter and missed blows, each blow ringing at one or
two drill-steel resonances and travelling as P and S. Electrical pickup enters after the sensor: the
same waveform at zero lag on every channel, each with its own gain and sometimes sign (mains bursts
clean, clipped or chopped by phase-angle control; switching steps with exponential decay and LC
ringing; square or bipolar pulse trains drooping through AC coupling). Machinery is ground motion
that changes in the window: a start-up with spin-up tone and rumble, a passing vehicle (Lorentzian
envelope, small Doppler shift), a crusher or conveyor with periodic knocks, or a machine coasting
down after a clunk. Noise is the background alone or what fires a trigger without an event: a short
band-limited burst, a ventilation gust, ADC spikes. Unseen classes for open-set tests: rockfall /
ore-pass flow (emergent cascade of low-frequency impacts), scaling (sparse irregular nearby
impacts), raise boring (continuous cutter grinding modulated at the cutter-passing rate, with gear
tones) and test pulses (a calibration current through the coil: the sensor's own step response).

Regimes. ``high``: hard-rock systems at 2-20 kHz, Mw -3..1, 30-1000 m, beta 3.0-3.6 km/s, stress drop
0.1-10 MPa, Q 50-400 (corners from kHz down to ~50 Hz; S-P up to ~150 ms). ``low``: coal, open-pit
and regional networks at 250-1000 Hz, ML -1..2 at 0.2-5 km in softer rock (beta 1.8-3 km/s, vp/vs
1.7-2, stress drop 0.01-1 MPa, Q 50-300). Small local magnitudes under-read moment magnitude, so
Mw = 0.67 ML + 0.6; corners fall at 5-100 Hz, S-P reaches a second or more, codas last seconds and
blasts several seconds.

Recording chains (``instrument.SITE_TYPES``): eight site types, each a set of ranges drawn afresh per
window: 4.5/14/28 Hz geophones with damping 0.3-0.75 or acceleration sensors with their resonance,
a mounting resonance (grouted high, bolted or plated low and sharp), AC coupling, an anti-alias
filter (causal Butterworth, Chebyshev or elliptic IIR, or a zero-phase linear-phase FIR with
pre-ringing), channel orientation (nominal Z, N, E with installation error, horizontals at unknown
azimuth, or an arbitrary borehole rotation), per-channel gain and polarity. Backgrounds are not
white: a power-law ground-noise spectrum with band-limited humps, steady tonal lines from fans and
pumps with harmonics and slow wander, white electronic self-noise, level drift, mains hum (50 or
60 Hz) with odd harmonics; the ADC adds DC offset, single-sample spikes, quantisation as coarse as
10-40 distinct values across the background range, and clipping at full scale.

SNR is the event's RMS over its 5-95 % energy span against the background RMS of the window.
"""

from training.crosscheck.generate import (
    ALL_CLASSES,
    GENERATOR,
    LOW_REGIME_DEFAULTS,
    VERSION,
    generate_stream,
    generate_windows,
    write_dataset,
)
from training.crosscheck.instrument import SITE_TYPES, site_types
from training.crosscheck.sources import REGIMES, UNSEEN

__all__ = ["ALL_CLASSES", "GENERATOR", "LOW_REGIME_DEFAULTS", "REGIMES", "SITE_TYPES", "UNSEEN", "VERSION",
           "generate_stream", "generate_windows", "site_types", "write_dataset"]
