"""Site profiles: what makes one mine's records look different from another's.

A profile fixes the sensor (geophone natural frequency and damping, or an
accelerometer), the rock's attenuation (Q), the background spectrum, the mains
frequency and hum level, the ADC's quantisation step and clipping level, and the
rate of single-sample spikes. Six profiles are used for training; two are held
out as unseen sites for the generalisation test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edge.errors import UserError


@dataclass(frozen=True)
class SiteProfile:
    """Recording conditions of one mine site (levels in dB are relative to the background RMS)."""

    name: str
    description: str
    sensor: str  # "geophone" (output in m/s) or "accelerometer" (m/s^2)
    natural_hz: float  # geophone natural frequency; ignored for accelerometers
    damping: float  # fraction of critical damping of the geophone
    q_range: tuple[float, float]  # S-wave quality factor of the rock mass
    noise_velocity: float  # background ground-velocity RMS, m/s
    red_corner_hz: float  # corner below which the ground noise rises (ventilation, distant machinery)
    red_db: float  # how much the low-frequency part stands above the white floor
    mains_hz: float  # 50 or 60
    hum_db: float  # mains hum level re background
    lsb_sigma: float  # ADC step in units of the background RMS (0.3+ is coarse: ~10-40 levels)
    clip_db: float  # ADC/amplifier full scale re background RMS
    spike_rate: float  # single-sample spikes per second
    ambient_hz: tuple[float, ...] = field(default_factory=tuple)  # stationary machinery tones
    ambient_db: float = -12.0

    @property
    def units(self) -> str:
        return "m/s" if self.sensor == "geophone" else "m/s^2"

    def as_dict(self) -> dict:
        """A JSON-ready description, for manifests."""
        return asdict(self) | {"units": self.units}


SITES: dict[str, SiteProfile] = {p.name: p for p in (
    SiteProfile("za-deep-gold", "deep tabular gold reef, quiet hard rock", "geophone", 14.0, 0.70,
                (150.0, 400.0), 3e-7, 6.0, 8.0, 50.0, -14.0, 0.08, 72.0, 0.2),
    SiteProfile("cl-block-cave", "block cave under a busy undercut level", "accelerometer", 0.0, 0.0,
                (50.0, 200.0), 1e-6, 12.0, 14.0, 50.0, -8.0, 0.30, 60.0, 1.0, (37.5,), -10.0),
    SiteProfile("au-sublevel-stope", "sublevel open stoping, high-gain coarse ADC", "geophone", 14.0, 0.68,
                (80.0, 300.0), 5e-7, 8.0, 10.0, 50.0, -4.0, 0.45, 66.0, 0.5),
    SiteProfile("cn-coal-longwall", "longwall coal face, soft attenuating strata", "geophone", 4.5, 0.70,
                (40.0, 120.0), 8e-7, 3.0, 16.0, 50.0, -10.0, 0.15, 78.0, 0.1, (24.7, 49.4), -14.0),
    SiteProfile("ca-nickel-deep", "deep nickel mine on 60 Hz power", "geophone", 28.0, 0.72,
                (150.0, 400.0), 4e-7, 10.0, 6.0, 60.0, -6.0, 0.20, 70.0, 0.3),
    SiteProfile("us-hardrock-vein", "narrow-vein hard rock, accelerometers, 60 Hz", "accelerometer", 0.0, 0.0,
                (100.0, 300.0), 6e-7, 5.0, 12.0, 60.0, -12.0, 0.10, 74.0, 0.6, (29.0,), -12.0),
    # Held out: combinations and extremes training never sees.
    SiteProfile("se-sublevel-cave", "sublevel caving, strong hum, very coarse ADC", "accelerometer", 0.0, 0.0,
                (200.0, 400.0), 7e-7, 7.0, 9.0, 50.0, 0.0, 0.60, 62.0, 1.5),
    SiteProfile("pe-cut-and-fill", "cut-and-fill stopes, 4.5 Hz geophones on 60 Hz power", "geophone", 4.5, 0.65,
                (60.0, 200.0), 9e-7, 4.0, 12.0, 60.0, -2.0, 0.35, 68.0, 0.8, (42.0,), -8.0),
)}

TRAIN_SITES: tuple[str, ...] = ("za-deep-gold", "cl-block-cave", "au-sublevel-stope", "cn-coal-longwall",
                                "ca-nickel-deep", "us-hardrock-vein")
HELDOUT_SITES: tuple[str, ...] = ("se-sublevel-cave", "pe-cut-and-fill")


def resolve_sites(names: list[str] | None) -> tuple[str, ...]:
    """Expand ``train``/``heldout``/``all`` and check every name; default: the training sites."""
    if not names:
        return TRAIN_SITES
    groups = {"train": TRAIN_SITES, "heldout": HELDOUT_SITES, "all": tuple(SITES)}
    out: list[str] = []
    for name in names:
        if name in groups:
            out.extend(groups[name])
        elif name in SITES:
            out.append(name)
        else:
            raise UserError(f"--sites: unknown site {name!r}; allowed: train, heldout, all, {', '.join(SITES)}")
    return tuple(dict.fromkeys(out))
