"""Site profiles: how one site's scanner images the same bodies (PD axial series only).

``default`` is the protocol every v2 study had before profiles existed; its
numbers are the ones the generator always drew, so its output is unchanged.
``site_b`` is another vendor's protocol: a longer-TE PD in which the nerve is
brighter than the fat around it (fascicles bright, the fat between them
darker), coarser pixels and thicker slices, and a receive array with few
elements of short reach and a strong table array under the thighs (deep
shading in front, bright behind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sciatic.phantom.v2.contrast import Contrast, Levels


@dataclass(frozen=True)
class CoilDesign:
    """A flexible receive array around each thigh; ranges are drawn per element (``elements``: per ring)."""

    elements: tuple[int, int] = (4, 9)  # numpy ``integers(low, high)``: high excluded
    distance_mm: tuple[float, float] = (8.0, 20.0)  # from the thigh's surface
    reach_mm: tuple[float, float] = (70.0, 110.0)
    gain: tuple[float, float] = (0.8, 1.2)
    posterior_gain: float = 1.0  # extra gain of the elements behind the thigh (a table array); 1: none


@dataclass(frozen=True)
class SiteProfile:
    """The PD axial protocol of one site: tissue levels, resolution, echo times, coil."""

    name: str
    levels: dict[Contrast, Levels] = field(default_factory=dict)  # replaces the nominal levels of a contrast
    unilateral_pixel_mm: tuple[float, float] = (0.6, 0.8)
    bilateral_pixel_mm: tuple[float, float] = (0.85, 1.1)
    thickness_2d_mm: tuple[float, ...] = (3.0, 3.5, 4.0, 4.5, 5.0)
    slices_2d: tuple[int, int] = (28, 40)  # inclusive
    thickness_3d_mm: tuple[float, float] = (0.9, 1.2)
    slices_3d: tuple[int, int] = (56, 72)  # inclusive
    echo_time_2d_ms: tuple[float, float] = (20.0, 34.0)
    echo_time_3d_ms: tuple[float, float] = (26.0, 36.0)
    coil: CoilDesign = CoilDesign()


DEFAULT_SITE = SiteProfile("default")

SITE_B = SiteProfile(
    "site_b",
    levels={
        # skin, fat, muscle, cortex, marrow, fast flow, slow flow, fascicle, interfascicular
        Contrast.PD: Levels(0.5, 0.6, 0.3, 0.04, 0.55, 0.06, 0.62, 0.95, 0.7),
        Contrast.PD_FS: Levels(0.45, 0.18, 0.35, 0.04, 0.2, 0.05, 0.7, 0.8, 0.4),
    },
    unilateral_pixel_mm=(1.0, 1.3),
    bilateral_pixel_mm=(1.0, 1.3),
    thickness_2d_mm=(5.0, 5.5, 6.0),
    slices_2d=(20, 28),
    thickness_3d_mm=(1.3, 1.6),
    slices_3d=(40, 56),
    echo_time_2d_ms=(36.0, 46.0),  # still PD by the eligibility rules (TE <= 50 ms)
    echo_time_3d_ms=(40.0, 48.0),
    coil=CoilDesign(
        elements=(2, 4), distance_mm=(5.0, 15.0), reach_mm=(45.0, 70.0), gain=(0.6, 1.4), posterior_gain=2.5
    ),
)

SITES: dict[str, SiteProfile] = {site.name: site for site in (DEFAULT_SITE, SITE_B)}


def site_profile(name: str) -> SiteProfile:
    """The profile called ``name``; ``ValueError`` names the known ones otherwise."""
    try:
        return SITES[name]
    except KeyError:
        raise ValueError(f"unknown site {name!r}; known: {', '.join(SITES)}") from None
