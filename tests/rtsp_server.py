"""A small RTSP server for tests and benchmarks, on GStreamer's gst-rtsp-server (Debian packages).

Run it with Debian's ``/usr/bin/python3`` (the GObject bindings ``python3-gi`` live there, not in the venv)::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4 [--path cam1 --path cam2]

Every ``--path`` serves the same H.264 MP4 file, looped for ever at real time without re-encoding: one feeder
pipeline (``filesrc ! qtdemux ! h264parse ! appsink sync=true``, looped with segment seeks) pushes its access
units into the ``appsrc`` of every client's media. A plain ``filesrc ! qtdemux ! rtph264pay`` launch line would
end the stream at the end of the file. ``--live`` adds ``/live``: synthetic 640x360 video whose top rows carry the
wall-clock time (ms) as a 48-bit barcode, encoded with x264 zerolatency, for glass-to-frame latency measurements.
``--h265`` adds ``/h265``: an H.265 camera as most port cameras are set up (moving test picture, x265 zerolatency, no
B-frames, a keyframe every ``--h265-fps`` pictures, VPS/SPS/PPS before every keyframe).

It prints ``READY <port>`` on stdout once it listens. RTP/RTCP UDP ports are confined to 127.0.0.1:30000-30999
(without an address pool the server binds them on every interface).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

BARCODE_BITS = 48
BARCODE_ROWS = 32


class FileFeeder:
    """Reads the file at real time, for ever, and hands each H.264 access unit to every registered appsrc."""

    def __init__(self, path: str) -> None:
        self.appsrcs: list = []
        self.caps = None
        self.lock = threading.Lock()
        self.pipeline = Gst.parse_launch(
            f'filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 ! '
            "video/x-h264,stream-format=byte-stream,alignment=au ! "
            "appsink name=sink sync=true emit-signals=true max-buffers=100"
        )
        sink = self.pipeline.get_by_name("sink")
        sink.connect("new-sample", self._on_sample)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def start(self) -> None:
        self.pipeline.set_state(Gst.State.PAUSED)
        self.pipeline.get_state(5 * Gst.SECOND)
        self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT, 0)
        self.pipeline.set_state(Gst.State.PLAYING)

    def _on_message(self, _bus, msg) -> None:
        if msg.type == Gst.MessageType.SEGMENT_DONE:
            # non-flushing segment seek: running time keeps increasing, so pacing continues seamlessly
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.SEGMENT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"feeder error: {err} {dbg}", file=sys.stderr, flush=True)

    def _on_sample(self, sink):
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        buf = sample.get_buffer()
        with self.lock:
            self.caps = sample.get_caps()
            targets = list(self.appsrcs)
        for src in targets:
            out = buf.copy()
            out.pts = out.dts = Gst.CLOCK_TIME_NONE  # appsrc do-timestamp stamps it on arrival
            out.duration = Gst.CLOCK_TIME_NONE
            src.emit("push-buffer", out)
        return Gst.FlowReturn.OK

    def add(self, appsrc) -> None:
        with self.lock:
            if self.caps is not None:
                appsrc.set_property("caps", self.caps)
            self.appsrcs.append(appsrc)

    def remove(self, appsrc) -> None:
        with self.lock:
            if appsrc in self.appsrcs:
                self.appsrcs.remove(appsrc)


class FileFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, feeder: FileFeeder) -> None:
        super().__init__()
        self.feeder = feeder
        self.set_shared(True)
        # clients that vanished (e.g. gave up while the server was frozen with SIGSTOP) must not stop the shared
        # media under the clients that are still there
        self.set_stop_on_disconnect(False)
        self.set_launch(
            "( appsrc name=src is-live=true do-timestamp=true format=time "
            "caps=video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! "
            "rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.connect("media-configure", self._configure)

    def _configure(self, _factory, media) -> None:
        src = media.get_element().get_by_name_recurse_up("src")
        self.feeder.add(src)
        media.connect("unprepared", lambda *_: self.feeder.remove(src))


class LiveFactory(GstRtspServer.RTSPMediaFactory):
    """Synthetic video with the wall-clock time (ms) as a barcode in the top rows, encoded live."""

    def __init__(self) -> None:
        super().__init__()
        self.set_shared(True)
        self.set_launch(
            "( appsrc name=src is-live=true do-timestamp=true format=time "
            "caps=video/x-raw,format=GRAY8,width=640,height=360,framerate=25/1 ! videoconvert ! "
            "video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 pass=quant quantizer=18 ! "
            "video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.connect("media-configure", self._configure)

    def _configure(self, _factory, media) -> None:
        src = media.get_element().get_by_name_recurse_up("src")
        state = {"run": True}
        media.connect("unprepared", lambda *_: state.update(run=False))
        threading.Thread(target=self._produce, args=(src, state), daemon=True).start()

    @staticmethod
    def _produce(src, state) -> None:
        w, h = 640, 360
        cell = w // BARCODE_BITS
        period = 1 / 25
        t_next = time.monotonic()
        while state["run"]:
            now_ms = time.time_ns() // 1_000_000
            frame = bytearray(w * h)
            for row in range(BARCODE_ROWS, h):
                frame[row * w : (row + 1) * w] = bytes([40 + row // 3]) * w
            bar = bytearray(w)
            for bit in range(BARCODE_BITS):
                value = 255 if (now_ms >> (BARCODE_BITS - 1 - bit)) & 1 else 0
                bar[bit * cell : (bit + 1) * cell] = bytes([value]) * cell
            for row in range(BARCODE_ROWS):
                frame[row * w : (row + 1) * w] = bar
            buf = Gst.Buffer.new_wrapped(bytes(frame))
            if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                break
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))


class H265Factory(GstRtspServer.RTSPMediaFactory):
    """An H.265 camera: a moving test picture encoded live with x265 (zerolatency: no B-frames, no lookahead), a
    keyframe a second, parameter sets (VPS/SPS/PPS) sent in band before every keyframe."""

    def __init__(self, size_px: tuple[int, int] = (320, 240), fps: int = 10) -> None:
        super().__init__()
        self.set_shared(True)
        self.set_stop_on_disconnect(False)
        w, h = size_px
        self.set_launch(
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},framerate={fps}/1 ! "
            f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! video/x-h265,profile=main ! "
            "h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1 )"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--file", help="H.264 MP4 to serve, looped")
    ap.add_argument("--path", action="append", default=None, help="mount path(s) for the file (default cam1)")
    ap.add_argument("--live", action="store_true", help="also serve /live (barcode clock, x264)")
    ap.add_argument("--h265", action="store_true", help="also serve /h265 (an H.265 camera, x265)")
    ap.add_argument("--h265-fps", type=int, default=10, help="/h265's picture rate (a keyframe a second)")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_thread_pool().set_max_threads(16)
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range("127.0.0.1", "127.0.0.1", 30000, 30999, 0)
    mounts = server.get_mount_points()
    feeder = None
    if args.file:
        feeder = FileFeeder(args.file)
        for path in args.path or ["cam1"]:
            factory = FileFactory(feeder)
            factory.set_address_pool(pool)
            mounts.add_factory("/" + path.strip("/"), factory)
    if args.live:
        live = LiveFactory()
        live.set_address_pool(pool)
        mounts.add_factory("/live", live)
    if args.h265:
        h265 = H265Factory(fps=args.h265_fps)
        h265.set_address_pool(pool)
        mounts.add_factory("/h265", h265)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    if feeder is not None:
        feeder.start()
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    if feeder is not None:
        feeder.pipeline.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
