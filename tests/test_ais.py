"""AIS ingest (seawatch.streams.ais) and the vessel state table (seawatch.vision.identity.vessels).

Real logs: ../shared/media/F_ais (the counts below were checked by hand against the files: the pyais sample's
20 two-part sentences are all first halves whose second half is missing from the file, and 100 sentences have
an empty payload; the Lemmer log is a GPSD receiver dump with own-ship $GP* sentences between the AIS lines).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from seawatch.errors import InputError
from seawatch.streams import ais
from seawatch.vision.identity.vessels import VesselTable

pyais = pytest.importorskip("pyais")

T0_S = 1_700_000_000  # 2023-11-14T22:13:20Z


def _cs(body: str) -> str:
    c = 0
    for ch in body.encode():
        c ^= ch
    return f"{c:02X}"


def tagged(sentence: str, *, c_s: float | None = None, station: str | None = None) -> str:
    """Prefix a sentence with an IEC 61162-450 tag block carrying ``c:`` (unix time) and ``s:`` (station)."""
    parts = []
    if station is not None:
        parts.append(f"s:{station}")
    if c_s is not None:
        parts.append(f"c:{c_s}")
    body = ",".join(parts)
    return f"\\{body}*{_cs(body)}\\{sentence}"


def enc(**fields) -> list[str]:
    return pyais.encode_dict(fields, talker_id="AI", radio_channel="B")


# ------------------------------------------------------------------------------------------------ real logs
def test_pyais_sample_real_counts(shared_media):
    path = shared_media / "F_ais" / "ais_pyais_nmea_data_sample.txt"
    if not path.is_file():
        from conftest import missing

        missing(f"{path} is absent")
    dec = ais.AisDecoder()
    msgs = list(ais.read_file(path, dec))
    st = dec.stats
    assert st.lines == 898 and st.sentences == 898 and st.non_ais_lines == 0
    assert st.messages == len(msgs) == 778
    assert dict(st.by_type) == {1: 667, 3: 76, 4: 6, 15: 7, 18: 19, 20: 1, 24: 2}
    # malformed lines are counted and skipped, never fatal
    assert dict(st.malformed) == {"empty_payload": 100, "incomplete_message": 20}
    assert st.fragments_dropped == 20
    assert len({m.mmsi for m in msgs}) == 167
    pos = [m for m in msgs if isinstance(m, ais.AisPosition) and m.has_position]
    lats = [m.lat_deg for m in pos]
    lons = [m.lon_deg for m in pos]
    assert 35.585 <= min(lats) < 35.586 and 38.555 <= max(lats) < 38.556
    assert 19.466 <= min(lons) < 19.468 and 25.168 <= max(lons) < 25.169
    # first decoded message of the file: !AIVDM,1,1,,A,33P;Tw0tjBQO22:E7dm66DrB20UP,0*2E
    first = msgs[0]
    assert first.msg_type == 3 and first.mmsi == 235070716
    assert first.lat_deg == pytest.approx(36.910433) and first.lon_deg == pytest.approx(20.760008)
    assert first.sog_kn == pytest.approx(14.6) and first.cog_deg == pytest.approx(156.1)
    assert first.heading_deg == 157.0
    # type 24 part A and part B of one class-B vessel merge into one row
    table = VesselTable(max_age_s=3600)
    table.update_many(msgs)
    row = table.get(244270489)
    assert row is not None and row.name == "SY-LUNDE" and row.callsign == "PH7460" and row.ship_type == 36
    assert row.ship_type_text == "sailing"


def test_lemmer_log_real_facts(shared_media):
    path = shared_media / "F_ais" / "ais_gpsd_lemmer_nl_ais-nmea.log"
    if not path.is_file():
        from conftest import missing

        missing(f"{path} is absent")
    dec = ais.AisDecoder(use_rmc_time=True)
    msgs = list(ais.read_file(path, dec))
    st = dec.stats
    assert st.lines == 1500 and st.sentences == 183 and st.non_ais_lines == 1317  # 1313 $GP* + 4 comments
    assert dict(st.by_type) == {1: 116, 3: 21, 5: 12, 8: 6, 18: 7, 24: 9}
    assert st.malformed_total == 0 and st.messages == 171
    assert len({m.mmsi for m in msgs}) == 33
    # the very first AIS message (a two-sentence type 5) comes before the first $GPRMC: it takes that fix's time
    assert {m.time_source for m in msgs} == {"gnss_rmc"}
    first = msgs[0]
    assert first.time_ns == 1586295590 * 10**9
    assert isinstance(first, ais.AisStatic) and first.msg_type == 5
    assert (first.mmsi, first.name, first.callsign, first.imo) == (371255000, "SEA ENTERPRISE", "HP6683", 9266633)
    assert (first.length_m, first.beam_m, first.destination, first.draught_m) == (28.0, 7.0, "LEMMER", 1.4)
    rmc = [m.time_ns for m in msgs if m.time_source == "gnss_rmc"]
    # $GPRMC,213950.00,...,070420 -> 2020-04-07T21:39:50Z; the log spans 163 s of GNSS time
    assert min(rmc) == 1586295590 * 10**9 and max(rmc) == 1586295753 * 10**9
    table = VesselTable(max_age_s=60)
    table.update_many(msgs)
    now = max(rmc)
    assert table.latest_ns == now and len(table) == 33
    live = table.snapshot(now)
    assert len(live) == 20
    cr = table.get(244824000)
    assert cr.name == "COASTAL ROAMER" and cr.ship_type_text == "tug" and cr.length_m == 25.0
    assert 52.838 < cr.lat_deg < 52.839 and 5.704 < cr.lon_deg < 5.705
    aged = table.prune(now)
    assert len(aged) == 13 and len(table) == 20 and all(r.age_s(now) > 60 for r in aged)


# ------------------------------------------------------------------------------------------------ decoder
def test_tag_block_time_and_station():
    (s,) = enc(msg_type=1, mmsi=412345678, lat=22.25, lon=113.5, speed=8.5, course=45.0, heading=44, status=7)
    dec = ais.AisDecoder(clock_ns=lambda: 0)
    m = dec.feed_line(tagged(s, c_s=T0_S, station="rx1"))
    assert isinstance(m, ais.AisPosition)
    assert m.time_ns == T0_S * 10**9 and m.time_source == "tag_block" and m.source_station == "rx1"
    assert (m.lat_deg, m.lon_deg, m.sog_kn, m.cog_deg, m.heading_deg, m.nav_status) == (22.25, 113.5, 8.5, 45.0, 44.0, 7)
    assert m.sog_mps == pytest.approx(8.5 * 1852 / 3600)
    # milliseconds in c: are recognised
    m2 = dec.feed_line(tagged(s, c_s=T0_S * 1000 + 250))
    assert m2.time_ns == T0_S * 10**9 + 250_000_000
    # no tag block: the receive clock
    m3 = dec.feed_line(s)
    assert m3.time_ns == 0 and m3.time_source == "receiver"


def test_multi_sentence_with_tag_blocks_and_interleaving():
    five = enc(msg_type=5, mmsi=412000003, shipname="ZHE DAI YU 03891", callsign="BZD123", imo=0, ship_type=30,
               to_bow=20, to_stern=10, to_port=3, to_starboard=4, destination="ZHOUSHAN", draught=3.2)
    assert len(five) == 2
    (pos,) = enc(msg_type=18, mmsi=412000004, lat=30.0, lon=122.1, speed=3.0, course=180.0)
    dec = ais.AisDecoder()
    out = [dec.feed_line(tagged(five[0], c_s=T0_S)), dec.feed_line(pos), dec.feed_line(tagged(five[1], c_s=T0_S + 1))]
    assert out[0] is None and isinstance(out[1], ais.AisPosition)
    st = out[2]
    assert isinstance(st, ais.AisStatic) and st.mmsi == 412000003 and st.name == "ZHE DAI YU 03891"
    assert st.time_ns == T0_S * 10**9  # the time of the first fragment
    assert (st.callsign, st.imo, st.ship_type, st.length_m, st.beam_m) == ("BZD123", None, 30, 30.0, 7.0)
    assert st.destination == "ZHOUSHAN" and st.draught_m == pytest.approx(3.2)


@pytest.mark.parametrize(
    "line, reason",
    [
        ("!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*28", "checksum"),  # last hex digit changed
        ("!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0", "checksum"),  # no checksum at all
        ("!AIVDM,1,1,,B,,0*25", "empty_payload"),
        ("!AIVDM,1,1,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*" + _cs("AIVDM,1,1,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0"), "field_count"),
        ("!AIVDM,x,1,,B,13aDp<PP,0*" + _cs("AIVDM,x,1,,B,13aDp<PP,0"), "fragment_fields"),
        ("!AIVDM,1,3,,B,13aDp<PP,0*" + _cs("AIVDM,1,3,,B,13aDp<PP,0"), "fragment_fields"),
        ("\\c:17000*00\\!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*29", "tag_block"),  # tag checksum wrong
        ("\\c:1700000000!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*29", "tag_block"),  # unterminated
    ],
)
def test_malformed_sentences_are_counted_not_fatal(line, reason):
    good = "!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*29"
    dec = ais.AisDecoder()
    assert dec.feed_line(line) is None
    assert dec.stats.malformed[reason] == 1 and dec.stats.malformed_total == 1
    m = dec.feed_line(good)  # the decoder keeps working
    assert m is not None and m.mmsi == 244660274 and dec.stats.messages == 1


def test_garbage_and_binary_lines_are_skipped():
    dec = ais.AisDecoder()
    msgs = dec.feed(b"\x00\xff\xfegarbage\n\n$GPGGA,1,2,3*00\n!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*29\r\n")
    assert len(msgs) == 1
    assert dec.stats.non_ais_lines == 2 and dec.stats.blank_lines == 1 and dec.stats.lines == 4


def test_unfinished_fragment_times_out():
    five = enc(msg_type=5, mmsi=412000003, shipname="A")
    now = [0]
    dec = ais.AisDecoder(clock_ns=lambda: now[0], fragment_timeout_s=5)
    assert dec.feed_line(five[0]) is None
    now[0] = 6 * 10**9
    assert dec.feed_line(five[1]) is None  # the first half expired before the second arrived: never joined
    assert dec.stats.malformed == {"incomplete_message": 1} and dec.stats.fragments_dropped == 1
    assert dec.buffered_fragments == 1  # the second half waits for a first half of its own
    dec.flush()
    assert dec.stats.malformed == {"incomplete_message": 2} and dec.stats.fragments_dropped == 2
    assert dec.stats.messages == 0 and dec.buffered_fragments == 0


def test_lone_later_fragment_waits_then_counts_as_incomplete():
    """A fragment 2 with no fragment 1 yet is held (its fragment 1 may still come, out of order), not dropped."""
    line = "!AIVDM,2,2,7,A,00000000000,2*" + _cs("AIVDM,2,2,7,A,00000000000,2")
    dec = ais.AisDecoder()
    assert dec.feed_line(line) is None
    assert dec.stats.malformed_total == 0 and dec.buffered_fragments == 1
    dec.flush()
    assert dec.stats.malformed == {"incomplete_message": 1} and dec.stats.fragments_dropped == 1


def test_type_19_24_27_and_unavailable_values():
    (s19,) = enc(msg_type=19, mmsi=412000002, lat=22.5, lon=113.9, speed=7.5, course=91.2, shipname="MIN SHI YU 06688",
                 ship_type=30, to_bow=10, to_stern=8, to_port=2, to_starboard=3)
    (s27,) = enc(msg_type=27, mmsi=412000001, lat=22.5, lon=113.9, speed=7, course=90, status=7)
    (na,) = enc(msg_type=1, mmsi=412000009, lat=91, lon=181, speed=102.3, course=360, heading=511)
    a24 = enc(msg_type=24, mmsi=412000005, partno=0, shipname="YUE ZHAN YU 90135")
    b24 = enc(msg_type=24, mmsi=412000005, partno=1, ship_type=30, callsign="BYZ90", to_bow=9, to_stern=6, to_port=2,
              to_starboard=2)
    dec = ais.AisDecoder()
    m19 = dec.feed_line(s19)
    assert m19.ais_class == "B" and m19.static is not None and m19.static.name == "MIN SHI YU 06688"
    assert m19.static.length_m == 18.0
    m27 = dec.feed_line(s27)
    assert m27.ais_class == "LR" and m27.sog_kn == 7 and m27.cog_deg == 90 and m27.nav_status == 7
    mna = dec.feed_line(na)
    assert not mna.has_position and mna.sog_kn is None and mna.cog_deg is None and mna.heading_deg is None
    table = VesselTable()
    for m in (m19, m27, mna, dec.feed_line(a24[0]), dec.feed_line(b24[0])):
        table.update(m)
    r = table.get(412000005)
    assert (r.name, r.callsign, r.ship_type_text, r.length_m, r.beam_m) == ("YUE ZHAN YU 90135", "BYZ90", "fishing", 15.0, 4.0)
    assert table.get(412000002).name == "MIN SHI YU 06688" and table.get(412000002).has_position
    assert not table.get(412000009).has_position


def test_table_ageing_and_out_of_order():
    (p1,) = enc(msg_type=1, mmsi=412000010, lat=22.0, lon=114.0, speed=5, course=10)
    (p2,) = enc(msg_type=1, mmsi=412000010, lat=22.1, lon=114.1, speed=5, course=10)
    dec = ais.AisDecoder()
    table = VesselTable(max_age_s=60)
    table.update(dec.feed_line(tagged(p2, c_s=T0_S + 30)))
    table.update(dec.feed_line(tagged(p1, c_s=T0_S)))  # older report arrives late: position stays
    r = table.get(412000010)
    assert r.lat_deg == pytest.approx(22.1) and r.position_time_ns == (T0_S + 30) * 10**9 and r.messages == 2
    assert table.snapshot((T0_S + 89) * 10**9)
    assert table.snapshot((T0_S + 91) * 10**9) == []
    assert table.prune((T0_S + 89) * 10**9) == [] and len(table) == 1
    assert [x.mmsi for x in table.prune((T0_S + 91) * 10**9)] == [412000010] and len(table) == 0


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot open AIS log"):
        list(ais.read_file(tmp_path / "nope.nmea"))


@pytest.mark.parametrize("url", ["tcp://host", "ftp://a:1", "udp://:99", "tcp://a:99999", "a:1"])
def test_bad_feed_url(url):
    with pytest.raises(InputError):
        ais.open_feed(url)


# ------------------------------------------------------------------------------------------------ sockets
def _collect(feed, n: int, timeout_s: float = 10.0) -> list:
    out: list = []
    done = threading.Event()

    def run():
        for m in feed.messages():
            out.append(m)
            if len(out) >= n:
                break
        done.set()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return out, done, th


def test_tcp_feed_reads_reassembles_and_reconnects():
    five = enc(msg_type=5, mmsi=412000003, shipname="ZHE DAI YU 03891")
    (pos,) = enc(msg_type=1, mmsi=412000010, lat=22.0, lon=114.0, speed=5, course=10)
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    port = srv.getsockname()[1]
    feed = ais.open_feed(f"tcp://127.0.0.1:{port}", timeout_s=0.2)
    feed.reconnect_s = 0.1
    out, done, th = _collect(feed, 3)
    try:
        conn, _ = srv.accept()
        # split a sentence across two TCP writes, and send a garbage line in between
        data = (tagged(five[0], c_s=T0_S) + "\r\n" + "!AIVDM,garbage*00\r\n" + five[1] + "\r\n").encode()
        conn.sendall(data[:30])
        time.sleep(0.05)
        conn.sendall(data[30:])
        conn.close()  # the feed reconnects
        conn2, _ = srv.accept()
        conn2.sendall((pos + "\n" + pos + "\n").encode())
        assert done.wait(10)
        conn2.close()
    finally:
        feed.stop()
        th.join(5)
        srv.close()
    assert not th.is_alive()
    assert [type(m).__name__ for m in out] == ["AisStatic", "AisPosition", "AisPosition"]
    assert out[0].name == "ZHE DAI YU 03891" and out[0].time_source == "tag_block"
    assert feed.connects == 2 and feed.disconnects >= 1
    assert feed.decoder.stats.malformed["checksum"] == 1


def test_tcp_feed_survives_refused_connection_and_stops():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    feed = ais.TcpAisFeed("127.0.0.1", port, timeout_s=0.2, reconnect_s=0.05)
    out, done, th = _collect(feed, 1)
    time.sleep(0.3)
    assert feed.state == "connecting" and feed.connects == 0
    t = time.monotonic()
    feed.stop()
    th.join(2)
    assert not th.is_alive() and time.monotonic() - t < 1.0 and feed.state == "stopped"


def test_udp_feed_datagrams():
    (p1,) = enc(msg_type=18, mmsi=412000004, lat=30.0, lon=122.1, speed=3.0, course=180.0)
    five = enc(msg_type=5, mmsi=412000003, shipname="ZHE DAI YU 03891")
    feed = ais.UdpAisFeed("127.0.0.1", 0, timeout_s=0.2)
    host, port = feed.open()
    out, done, th = _collect(feed, 3)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.sendto((p1 + "\r\n").encode(), (host, port))
        tx.sendto(b"\xde\xad\xbe\xef", (host, port))
        tx.sendto(("\n".join(five) + "\n" + tagged(p1, c_s=T0_S)).encode(), (host, port))  # several lines per datagram
        assert done.wait(10)
    finally:
        feed.stop()
        th.join(5)
        tx.close()
    assert not th.is_alive()
    assert [m.mmsi for m in out] == [412000004, 412000003, 412000004]
    assert out[2].time_ns == T0_S * 10**9
    assert feed.datagrams == 3 and feed.decoder.stats.non_ais_lines == 1


def test_cmd_ais_show_json(shared_media, capsys):
    import argparse
    import json

    from seawatch.vision.identity import cmd_ais_show

    path = shared_media / "F_ais" / "ais_gpsd_lemmer_nl_ais-nmea.log"
    if not path.is_file():
        from conftest import missing

        missing(f"{path} is absent")
    p = argparse.ArgumentParser()
    cmd_ais_show.add_arguments(p)
    assert cmd_ais_show.run(p.parse_args([str(path), "--rmc-time", "--max-age", "60", "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["time_ns"] == 1586295753 * 10**9 and len(doc["vessels"]) == 20
    assert doc["stats"]["messages"] == 171
    roamer = next(v for v in doc["vessels"] if v["mmsi"] == 244824000)
    assert roamer["name"] == "COASTAL ROAMER" and roamer["ship_type_text"] == "tug"
    # a log file runs on its own clock by default (its RMC fixes), as the pipeline's log replay does
    assert cmd_ais_show.run(p.parse_args([str(path), "--max-age", "60", "--json"])) == 0
    assert json.loads(capsys.readouterr().out) == doc
    # --no-rmc-time: the receive clock, so every vessel was heard "now"
    assert cmd_ais_show.run(p.parse_args([str(path), "--no-rmc-time", "--max-age", "60", "--json"])) == 0
    wall = json.loads(capsys.readouterr().out)
    assert abs(wall["time_ns"] - time.time_ns()) < 600 * 10**9 and len(wall["vessels"]) == 33
    with pytest.raises(InputError):
        cmd_ais_show.run(p.parse_args([str(path) + ".missing"]))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_GOOD = [
    "!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*29",
    "!AIVDM,2,1,9,B,55R3Vn82=ILTQ3KKS>1<D60Dq@E918U<F222221J1`?164vc03S1CCAD,0*2A",
    "!AIVDM,2,2,9,B,`88888888888880,2*76",
    "\\s:rx1,c:1700000000*" + _cs("s:rx1,c:1700000000") + "\\!AIVDM,1,1,,B,13aDp<PP000IwSlN?Wm@0?wN2<1T,0*29",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=20))
def test_decoder_never_raises_on_random_bytes(chunks):
    dec = ais.AisDecoder()
    for c in chunks:
        dec.feed(c)
    dec.flush()
    assert dec.stats.messages == 0 or dec.stats.sentences > 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 200), st.integers(0, 127)), max_size=12))
def test_decoder_never_raises_on_corrupted_sentences(edits):
    """Real sentences with one byte changed anywhere (payload, checksum, tag block, commas)."""
    dec = ais.AisDecoder()
    table = VesselTable()
    for which, pos, byte in edits:
        s = bytearray(_GOOD[which].encode())
        s[pos % len(s)] = byte
        for m in dec.feed(bytes(s)):
            table.update(m)
    dec.flush()
    assert dec.stats.messages + dec.stats.malformed_total + dec.stats.non_ais_lines + dec.stats.blank_lines >= 0
    assert dec.stats.sentences <= dec.stats.lines


def test_table_update_and_snapshot_from_two_threads():
    dec = ais.AisDecoder(clock_ns=lambda: T0_S * 10**9)
    msgs = [dec.feed_line(enc(msg_type=1, mmsi=412000000 + i, lat=22.0, lon=114.0, speed=1, course=1)[0])
            for i in range(2000)]
    table = VesselTable()
    errors = []

    def writer():
        try:
            table.update_many(msgs)
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    sizes = []
    while th.is_alive():
        sizes.append(len(table.snapshot(T0_S * 10**9)))
        table.prune(T0_S * 10**9)
    th.join()
    assert not errors and len(table) == 2000 and sizes == sorted(sizes)


# ------------------------------------------------------------------------------------------------ feed URLs, the CLI
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.mark.parametrize("url, words", [
    ("tcp://[::1", "bad host:port '[::1'"),
    ("tcp://::1:5631", "bad host:port"),
    ("tcp://user:s3cret@127.0.0.1:5631", "'tcp://***@127.0.0.1:5631': a user name or password cannot be used"),
    ("tcp://127.0.0.1:5631/x?token=s3cret", "nothing after the port"),
    ("udp://127.0.0.1:70000", "bad host:port"),
])
def test_malformed_or_credentialed_feed_urls_are_refused_redacted(url, words):
    with pytest.raises(InputError) as info:
        ais.open_feed(url)
    assert words in str(info.value) and "s3cret" not in str(info.value)


@pytest.mark.parametrize("url, scheme, host, port", [
    ("tcp://127.0.0.1:5631", "tcp", "127.0.0.1", 5631),
    ("tcp://[::1]:5631/", "tcp", "::1", 5631),
    ("udp://0.0.0.0:10110", "udp", "0.0.0.0", 10110),
    ("tcp://ais.example.org:10110", "tcp", "ais.example.org", 10110),
])
def test_good_feed_urls(url, scheme, host, port):
    assert ais.parse_feed_url(url) == (scheme, host, port)
    feed = ais.open_feed(url)
    assert feed.name == url.rstrip("/") and (feed.host, feed.port) == (host, port)


def _show(argv: list[str]) -> int:
    from seawatch.cli import main

    return main(["ais", "show", *argv])


def test_ais_show_on_a_feed_that_never_connects_is_an_error_naming_it(capsys, caplog):
    port = _closed_port()
    with caplog.at_level("INFO", logger="seawatch.streams.ais"):
        assert _show(["--seconds", "0.6", f"tcp://127.0.0.1:{port}"]) == 1
    captured = capsys.readouterr()
    assert f"seawatch: error: AIS feed tcp://127.0.0.1:{port}: never connected in 0.6 s (" in captured.err
    assert "refused" in captured.err.lower() and "0 vessels" not in captured.out
    # the first failure of an outage is a warning (seen without -v), the retries are not
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"AIS tcp://127.0.0.1:{port}: connect failed" in warnings[0].getMessage()


def test_ais_show_refuses_a_malformed_or_credentialed_url_without_showing_the_password(capsys, caplog):
    from seawatch.cli import main

    assert _show(["--seconds", "0.5", "tcp://[::1"]) == 1
    assert "bad host:port '[::1'" in capsys.readouterr().err
    with caplog.at_level("DEBUG"):
        assert main(["-vv", "ais", "show", "--seconds", "0.5", f"tcp://user:s3cret@127.0.0.1:{_closed_port()}"]) == 1
    captured = capsys.readouterr()
    assert "a user name or password cannot be used" in captured.err
    assert "s3cret" not in captured.err + captured.out + caplog.text


def test_ais_show_says_when_a_udp_port_heard_nothing(capsys):
    port = _closed_port()
    assert _show(["--seconds", "0.3", f"udp://127.0.0.1:{port}"]) == 0
    captured = capsys.readouterr()
    assert f"warning: AIS feed udp://127.0.0.1:{port}: no datagram received in 0.3 s" in captured.err
    assert "0 vessels" in captured.out


def test_ais_show_on_a_live_tcp_feed(capsys):
    (pos,) = enc(msg_type=1, mmsi=412000010, lat=22.0, lon=114.0, speed=5, course=10)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.sendall((pos + "\r\n").encode())
        time.sleep(1.0)
        conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        assert _show(["--seconds", "0.6", f"tcp://127.0.0.1:{port}"]) == 0
    finally:
        th.join(5)
        srv.close()
    captured = capsys.readouterr()
    assert "1 vessels" in captured.out and "412000010" in captured.out and "error" not in captured.err
