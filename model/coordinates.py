"""From the city's metric CRS back to longitude/latitude, without knowing the CRS.

The features table carries both (mx, my) and (lon, lat) for every point, so the inverse projection
over one city's extent is fitted once as a cubic polynomial (least squares on centred, scaled metres).
Over a 100 km extent of a UTM zone the fit error is far below a metre (see tests/model/test_metrics.py).

    conv = MetricToLonLat.fit(mxy, lonlat)     # (n, 2) metres, (n, 2) degrees
    lonlat = conv(mxy_pred)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _design(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    return np.stack([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)], axis=1)  # (n, terms)


def _complex(xy: np.ndarray) -> np.ndarray:
    return xy[:, 0] + 1j * xy[:, 1]


def _similarity(mxy: np.ndarray, lonlat: np.ndarray) -> tuple:
    """Rotation + scale + shift from metric coordinates to local east/north metres (from 1+ points).

    Handles the grid convergence of the CRS when two or more distinct points are known.
    """
    lon0, lat0 = lonlat.mean(axis=0)
    phi = np.radians(lat0)  # metres per degree on the WGS-84 ellipsoid at lat0
    ky = 111_132.92 - 559.82 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi)
    kx = 111_412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi)
    z = _complex(mxy - mxy.mean(axis=0))
    w = _complex(np.stack([(lonlat[:, 0] - lon0) * kx, (lonlat[:, 1] - lat0) * ky], axis=1))
    if np.abs(z).max() > 1.0:
        (c, t), *_ = np.linalg.lstsq(np.stack([z, np.ones_like(z)], axis=1), w, rcond=None)
    else:
        c, t = 1.0 + 0j, w.mean()
    return (lon0, lat0, kx, ky, c, t)


@dataclass(frozen=True)
class MetricToLonLat:
    centre: np.ndarray  # (2,) metres
    scale: float  # metres
    coef: np.ndarray  # (terms, 2)
    degree: int  # 3 or 1; 0: too few points for a polynomial, the similarity map below is used
    similarity: tuple | None = None  # (lon0, lat0, m_per_deg_lon, m_per_deg_lat, c, t)

    @classmethod
    def fit(cls, mxy: np.ndarray, lonlat: np.ndarray, *, max_points: int = 50_000, seed: int = 0) -> MetricToLonLat:
        mxy, lonlat = np.asarray(mxy, np.float64), np.asarray(lonlat, np.float64)
        if len(mxy) > max_points:
            pick = np.random.default_rng(seed).choice(len(mxy), max_points, replace=False)
            mxy, lonlat = mxy[pick], lonlat[pick]
        centre = mxy.mean(axis=0)
        scale = float(max(np.abs(mxy - centre).max(), 1.0))
        uv = (mxy - centre) / scale
        for degree in (3, 1):  # cubic when the points span the plane well, else affine
            design = _design(uv[:, 0], uv[:, 1], degree)
            if len(uv) >= 20 * design.shape[1] and np.linalg.matrix_rank(design) == design.shape[1]:
                coef, *_ = np.linalg.lstsq(design, lonlat, rcond=None)
                return cls(centre, scale, coef, degree)
        return cls(centre, scale, np.zeros((0, 2)), 0, _similarity(mxy, lonlat))

    def __call__(self, mxy: np.ndarray) -> np.ndarray:
        if self.degree == 0:
            lon0, lat0, kx, ky, c, t = self.similarity
            z = c * _complex(np.asarray(mxy, np.float64) - self.centre) + t  # local metres east/north
            return np.stack([lon0 + z.real / kx, lat0 + z.imag / ky], axis=1)
        uv = (np.asarray(mxy, np.float64) - self.centre) / self.scale
        return _design(uv[:, 0], uv[:, 1], self.degree) @ self.coef  # (n, 2) lon, lat
