"""Geolocation benchmark: ground error vs altitude and depression angle, perfect vs noisy telemetry.

Each trial flies a camera fixed to the airframe (pitched so the line of sight has the given depression) north at
10 m/s with a 5 deg/s yaw rate and -3 deg pitch; telemetry is sampled at
10 Hz and quantised the way MAVLink carries it (GLOBAL_POSITION_INT: 1e-7 deg, mm, cm/s; ATTITUDE: float32
rad). A frame is taken at a random time between samples and targets at pixels around the image centre (+-40 px)
are placed on the sea from the true pose. Seawatch then geolocates those pixels with the pose interpolated
from the telemetry by ``PoseTimeline``:

* **perfect**: only the quantisation and the interpolation stand between telemetry and truth;
* **noisy**: attitude sigma 0.5 deg on each of roll/pitch/yaw, GPS sigma 1.5 m north and east, altitude
  sigma 1.0 m, frame timing jitter sigma 50 ms; the 95 % ellipse uses those same sigmas.

Targets: median <= 0.5 m with perfect telemetry (every cell); median <= 5 m at 100 m / 45 deg with noise;
the stated 95 % ellipse holds the truth in >= 90 % of noisy trials (every cell).

Run: ``.venv/bin/python benchmarks/bench_geo.py [--trials 200] [--json out.json]``; exit status 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from seawatch.drone.geometry import (
    PERFECT,
    CameraIntrinsics,
    CameraPose,
    GeoLocator,
    PoseSigmas,
    inside_ellipse,
    latlon_to_offsets,
    offsets_to_latlon,
)
from seawatch.drone.pose import AttitudeSample, PoseTimeline, PositionSample

NS = 1_000_000_000
ALTITUDES_M = (30.0, 60.0, 100.0, 150.0)
DEPRESSIONS_DEG = (15.0, 30.0, 45.0, 60.0, 75.0, 90.0)
SPEED_M_S = 10.0
YAW_RATE_DEG_S = 5.0
PITCH_DEG = -3.0
NOISE = dict(attitude_deg=0.5, gps_m=1.5, alt_m=1.0, timing_s=0.05)


def _truth(t_s: float, alt_m: float, yaw0_deg: float, depression_deg: float) -> CameraPose:
    lat, lon = offsets_to_latlon(54.0, 7.0, SPEED_M_S * t_s, 0.0)
    # camera fixed to the airframe ("body"): every attitude error moves the line of sight
    return CameraPose(float(lat[0]), float(lon[0]), alt_m, 0.0, PITCH_DEG, yaw0_deg + YAW_RATE_DEG_S * t_s,
                      0.0, -depression_deg - PITCH_DEG, 0.0, "body", int(t_s * NS), (SPEED_M_S, 0.0, 0.0),
                      (0.0, 0.0, YAW_RATE_DEG_S))


def _timeline(alt_m: float, yaw0_deg: float, depression_deg: float) -> PoseTimeline:
    tl = PoseTimeline(default_gimbal=(0.0, -depression_deg - PITCH_DEG, 0.0, "body"), max_age_s=0.5)
    f32 = lambda v: float(np.float32(math.radians(v)))  # noqa: E731  ATTITUDE carries float32 radians
    for i in range(11):
        t = i * 0.1
        p = _truth(t, alt_m, yaw0_deg, depression_deg)
        tl.add_position(PositionSample(int(t * NS), round(p.lat_deg * 1e7) / 1e7, round(p.lon_deg * 1e7) / 1e7,
                                       round(alt_m * 1000) / 1000, (SPEED_M_S, 0.0, 0.0)))
        yaw = ((p.yaw_deg + 180) % 360) - 180
        tl.add_attitude(AttitudeSample(int(t * NS), math.degrees(f32(0.0)), math.degrees(f32(PITCH_DEG)),
                                       math.degrees(f32(yaw)), (0.0, 0.0, YAW_RATE_DEG_S)))
    return tl


def run(trials: int = 200, seed: int = 1, pixels_per_trial: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    k = CameraIntrinsics(1920, 1080, 1400.0, 1400.0, 960.0, 540.0, k1=-0.1, k2=0.03)
    exact = GeoLocator(k, sigmas=PERFECT, max_range_m=50_000)
    noisy_loc = GeoLocator(
        k,
        sigmas=PoseSigmas(attitude_deg=NOISE["attitude_deg"], horizontal_m=NOISE["gps_m"], vertical_m=NOISE["alt_m"],
                          timing_s=NOISE["timing_s"], pixel_px=0.0),
        max_range_m=50_000,
    )
    cells = []
    for alt in ALTITUDES_M:
        for dep in DEPRESSIONS_DEG:
            perf_err, noisy_err, inside, semi_major = [], [], [], []
            for _ in range(trials):
                yaw0 = float(rng.uniform(-180, 180))
                tl = _timeline(alt, yaw0, dep)
                t_f = float(rng.uniform(0.05, 0.95))
                truth_pose = _truth(t_f, alt, yaw0, dep)
                px = np.array([960.0, 540.0]) + rng.uniform(-40, 40, size=(pixels_per_trial, 2))
                truth = exact.locate(px, truth_pose)
                tl_lat, tl_lon = truth.lat_deg, truth.lon_deg
                # perfect telemetry: interpolated, quantised pose at the exact frame time
                est = exact.locate(px, tl.pose_at(int(t_f * NS)).pose)
                dn, de = latlon_to_offsets(54.0, 7.0, est.lat_deg, est.lon_deg)
                tn, te = latlon_to_offsets(54.0, 7.0, tl_lat, tl_lon)
                perf_err.extend(np.hypot(dn - tn, de - te).tolist())
                # noisy telemetry
                jitter = float(rng.normal(0, NOISE["timing_s"]))
                p = tl.pose_at(int((t_f + jitter) * NS)).pose
                gn, ge = rng.normal(0, NOISE["gps_m"], 2)
                la, lo = offsets_to_latlon(p.lat_deg, p.lon_deg, gn, ge)
                dr, dp, dy = rng.normal(0, NOISE["attitude_deg"], 3)
                noisy_pose = CameraPose(float(la[0]), float(lo[0]), p.alt_m + float(rng.normal(0, NOISE["alt_m"])),
                                        p.roll_deg + dr, p.pitch_deg + dp, p.yaw_deg + dy, p.gimbal_roll_deg,
                                        p.gimbal_pitch_deg, p.gimbal_yaw_deg, p.gimbal_frame, p.time_ns,
                                        p.velocity_ned_m_s, p.rates_deg_s)
                g = noisy_loc.locate(px, noisy_pose)
                ok = g.valid
                dn, de = latlon_to_offsets(54.0, 7.0, g.lat_deg[ok], g.lon_deg[ok])
                noisy_err.extend(np.hypot(dn - tn[ok], de - te[ok]).tolist())
                # error vector in the estimate's own tangent frame, for the ellipse test
                for i in np.flatnonzero(ok):
                    en, ee = latlon_to_offsets(float(g.lat_deg[i]), float(g.lon_deg[i]), tl_lat[i], tl_lon[i])
                    inside.append(bool(inside_ellipse(en, ee, g.cov_ne_m2[i : i + 1])[0]))
                semi_major.extend(g.semi_major_m[ok].tolist())
            pe, ne = np.asarray(perf_err), np.asarray(noisy_err)
            cells.append(dict(
                alt_m=alt, depression_deg=dep, n=int(len(pe)),
                perfect_median_m=float(np.median(pe)), perfect_p95_m=float(np.percentile(pe, 95)),
                noisy_median_m=float(np.median(ne)), noisy_p95_m=float(np.percentile(ne, 95)),
                ellipse95_semi_major_median_m=float(np.median(semi_major)),
                ellipse95_coverage=float(np.mean(inside)),
            ))
    return {"cells": cells, "noise": NOISE, "trials": trials, "pixels_per_trial": pixels_per_trial, "seed": seed}


def check(result: dict) -> list[tuple[str, bool, str]]:
    cells = result["cells"]
    worst_perfect = max(c["perfect_median_m"] for c in cells)
    c100 = next(c for c in cells if c["alt_m"] == 100.0 and c["depression_deg"] == 45.0)
    worst_cov = min(c["ellipse95_coverage"] for c in cells)
    return [
        ("perfect telemetry: median <= 0.5 m in every cell", worst_perfect <= 0.5, f"worst median {worst_perfect:.3f} m"),
        ("noisy, 100 m / 45 deg: median <= 5 m", c100["noisy_median_m"] <= 5.0, f"median {c100['noisy_median_m']:.2f} m"),
        ("95 % ellipse holds truth in >= 90 % of trials", worst_cov >= 0.90, f"worst cell {100 * worst_cov:.1f} %"),
    ]


def format_table(result: dict) -> str:
    lines = [
        f"geolocation error (m), {result['trials']} trials x {result['pixels_per_trial']} pixels per cell; noise: "
        f"attitude {NOISE['attitude_deg']} deg, GPS {NOISE['gps_m']} m, altitude {NOISE['alt_m']} m, "
        f"timing {1000 * NOISE['timing_s']:.0f} ms",
        f"{'alt_m':>6} {'dep_deg':>7} | {'perfect med':>11} {'p95':>7} | {'noisy med':>9} {'p95':>7} | "
        f"{'ellipse95 a':>11} {'coverage':>8}",
    ]
    for c in result["cells"]:
        lines.append(
            f"{c['alt_m']:6.0f} {c['depression_deg']:7.0f} | {c['perfect_median_m']:11.3f} {c['perfect_p95_m']:7.3f} | "
            f"{c['noisy_median_m']:9.2f} {c['noisy_p95_m']:7.2f} | {c['ellipse95_semi_major_median_m']:11.2f} "
            f"{100 * c['ellipse95_coverage']:7.1f}%"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Seawatch geolocation benchmark")
    ap.add_argument("--trials", type=int, default=200, help="poses per cell (default 200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.trials, args.seed)
    result["seconds"] = time.perf_counter() - t0
    print(format_table(result))
    ok = True
    for name, passed, detail in check(result):
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
        ok &= passed
    print(f"({result['seconds']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
