"""The temporal modality of a point: weekday (0 = Monday), hour and minute in the city's local time.

    weekday, hour, minute = temporal_fields(ts, "Europe/Lisbon")     # ts: Unix seconds (int64), UTC

Local time comes from the IANA time-zone database through Arrow's compute kernels, vectorised.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TEMPORAL_FIELDS = ("weekday", "hour", "minute")


def temporal_fields(ts, timezone: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weekday, hour, minute) int32 arrays for Unix seconds `ts` in `timezone`."""
    local = pa.array(np.asarray(ts, dtype=np.int64), pa.timestamp("s", tz=timezone))
    weekday = pc.day_of_week(local, count_from_zero=True, week_start=1)
    return tuple(
        np.asarray(a.to_numpy(zero_copy_only=False), dtype=np.int32)
        for a in (weekday, pc.hour(local), pc.minute(local))
    )
