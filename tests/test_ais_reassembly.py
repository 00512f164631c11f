"""AIS multi-sentence reassembly (out of order, interleaved, duplicated, reused ids, floods) and the time of log
files that mix timed and untimed lines (seawatch.streams.ais, ``seawatch ais show``).

The two-part type-5 sentences below are real: they are lines of ../shared/media/F_ais/ais_gpsd_lemmer_nl_ais-nmea.log
(GPSD project, BSD-2-Clause; checked against the file when it is present). Their MMSI, callsign and name are
checked by a 6-bit decoder written here, independent of pyais, so a wrong reassembly cannot pass by agreeing
with itself.
"""

from __future__ import annotations

import argparse
import json

import pytest

from seawatch.streams import ais

pyais = pytest.importorskip("pyais")

T0_S = 1_700_000_000  # 2023-11-14T22:13:20Z

# (line numbers in the Lemmer log) -> (fragment 1, fragment 2), (MMSI, callsign, name)
REAL = {
    "SEA ENTERPRISE": (  # lines 6-7: id 9, channel B
        ("!AIVDM,2,1,9,B,55R3Vn82=ILTQ3KKS>1<D60Dq@E918U<F222221J1`?164vc03S1CCAD,0*2A",
         "!AIVDM,2,2,9,B,`88888888888880,2*76"),
        (371255000, "HP6683", "SEA ENTERPRISE"),
    ),
    "AVANTI": (  # lines 197-198: id 4, channel A
        ("!AIVDM,2,1,4,A,53aGEvp000010;S3KH05H4q@T00000000000000U1@:33tl>0431CCAD,0*0C",
         "!AIVDM,2,2,4,A,P00000000000008,2*48"),
        (244700667, "PB8066", "AVANTI"),
    ),
    "GAASTERLAND": (  # lines 1034-1035: id 4, channel B
        ("!AIVDM,2,1,4,B,53aIk>`000010OW7S80L45=@E8h4p@000000000Q:0665t0Ht0000000,0*4B",
         "!AIVDM,2,2,4,B,000000000000000,2*23"),
        (244740922, "PG9182", "GAASTERLAND"),
    ),
    "GERO-B": (  # lines 455-456: id 5, channel A
        ("!AIVDM,2,1,5,A,53aNa=l0000107KWG>0LE8vl:22222222222221?7`@4440Ht831CCAD,0*57",
         "!AIVDM,2,2,5,A,`88888888888880,2*79"),
        (244820279, "PA6953", "GERO-B"),
    ),
    "TUI MAYA": (  # lines 1181-1182: id 5, channel B
        ("!AIVDM,2,1,5,B,539fMC400000@gGWK21ADV0l5T62222222222215000007>j04@CDm1D,0*59",
         "!AIVDM,2,2,5,B,Q0CH88888888880,2*48"),
        (211524940, "DK5960", "TUI MAYA"),
    ),
}


def _cs(body: str) -> str:
    c = 0
    for ch in body.encode():
        c ^= ch
    return f"{c:02X}"


def tag(sentence: str, **fields) -> str:
    """Prefix an IEC 61162-450 tag block, fields in the order given (``s=``, ``c=``, ``g=``...)."""
    body = ",".join(f"{k}:{v}" for k, v in fields.items())
    return f"\\{body}*{_cs(body)}\\{sentence}"


def sentence(talker: str, total: int, num: int, seq: str, channel: str, payload: str, fill: int) -> str:
    body = f"{talker},{total},{num},{seq},{channel},{payload},{fill}"
    return f"!{body}*{_cs(body)}"


def type5(mmsi: int, name: str, callsign: str, *, seq: int = 3, channel: str = "A") -> list[str]:
    """A two-part type 5 (pyais's encoder, real checksums), as a receiver numbering it ``seq`` would write it."""
    lines = pyais.encode_dict({"msg_type": 5, "mmsi": mmsi, "shipname": name, "callsign": callsign, "ship_type": 70,
                               "to_bow": 50, "to_stern": 30, "to_port": 6, "to_starboard": 6, "destination": "LEMMER"},
                              talker_id="AI", sentence_type="VDM", radio_channel=channel, seq_id=seq)
    assert len(lines) == 2
    return lines


def decode_type5(lines: list[str]) -> tuple[int, str, str]:
    """(MMSI, callsign, name) of a type 5 from its sentences, by ITU-R M.1371 bit positions; not pyais."""
    bits = ""
    for s in lines:
        for ch in s.split(",")[5]:
            v = ord(ch) - 48
            bits += f"{v - 8 if v > 40 else v:06b}"
    assert int(bits[0:6], 2) == 5

    def text(a: int, b: int) -> str:
        vals = [int(bits[i : i + 6], 2) for i in range(a, b, 6)]
        return "".join(chr(v + 64 if v < 32 else v) for v in vals).replace("@", " ").strip()

    return int(bits[8:38], 2), text(70, 112), text(112, 232)


def fields_of(m) -> tuple[int, str | None, str | None]:
    assert isinstance(m, ais.AisStatic) and m.msg_type == 5
    return m.mmsi, m.callsign, m.name


def dec(**kw) -> ais.AisDecoder:
    return ais.AisDecoder(clock_ns=kw.pop("clock_ns", lambda: T0_S * 10**9), **kw)


def test_real_sentences_are_from_the_log_and_the_test_decoder_agrees(shared_media):
    path = shared_media / "F_ais" / "ais_gpsd_lemmer_nl_ais-nmea.log"
    if not path.is_file():
        from conftest import missing

        missing(f"{path} is absent")
    log_lines = set(path.read_text(encoding="utf-8").splitlines())
    for name, (frags, expected) in REAL.items():
        assert set(frags) <= log_lines, name
        assert decode_type5(list(frags)) == expected
        assert expected[2] == name


# ------------------------------------------------------------------------------------------------ order
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_type5_fragment_2_before_fragment_1(name):
    (f1, f2), expected = REAL[name]
    d = dec()
    assert d.feed_line(f2) is None
    m = d.feed_line(f1)
    assert fields_of(m) == expected == decode_type5([f1, f2])
    assert d.stats.messages == 1 and d.stats.malformed_total == 0 and d.stats.fragments_dropped == 0
    assert d.buffered_fragments == 0


def test_sea_enterprise_decoded_in_full_out_of_order():
    (f1, f2), _ = REAL["SEA ENTERPRISE"]
    m = dec().feed(f"{f2}\n{f1}\n")[0]
    assert (m.mmsi, m.name, m.callsign, m.imo) == (371255000, "SEA ENTERPRISE", "HP6683", 9266633)
    assert m.destination == "LEMMER"
    assert (m.length_m, m.beam_m, m.draught_m, m.channel) == (28.0, 7.0, 1.4, "B")


@pytest.mark.parametrize(
    "order",
    [
        # fragments of four real messages: two pairs share an id (4 on A and B, 5 on A and B)
        ["AVANTI/1", "GAASTERLAND/1", "GAASTERLAND/2", "AVANTI/2", "GERO-B/2", "TUI MAYA/2", "TUI MAYA/1", "GERO-B/1"],
        ["GAASTERLAND/2", "AVANTI/2", "TUI MAYA/1", "AVANTI/1", "GERO-B/1", "GAASTERLAND/1", "GERO-B/2", "TUI MAYA/2"],
        ["TUI MAYA/2", "GERO-B/2", "GAASTERLAND/2", "AVANTI/2", "AVANTI/1", "GERO-B/1", "GAASTERLAND/1", "TUI MAYA/1"],
    ],
)
def test_interleaved_real_messages_in_any_order(order):
    d = dec()
    out = []
    for item in order:
        name, part = item.split("/")
        m = d.feed_line(REAL[name][0][int(part) - 1])
        if m is not None:
            out.append(fields_of(m))
    assert sorted(out) == sorted(REAL[n][1] for n in ("AVANTI", "GAASTERLAND", "GERO-B", "TUI MAYA"))
    assert d.stats.malformed_total == 0 and d.stats.fragments_dropped == 0 and d.buffered_fragments == 0


# ------------------------------------------------------------------------------------------------ duplicates
@pytest.mark.parametrize(
    "order",
    [[1, 1, 2, 2], [1, 2, 1, 2], [2, 1, 1, 2], [2, 2, 1, 1], [1, 2, 2, 1], [1, 2, 2, 1, 1, 2]],
)
def test_the_same_sentences_from_two_receivers_give_one_message(order):
    (f1, f2), expected = REAL["GERO-B"]
    d = dec()
    out = [m for i in order if (m := d.feed_line((f1, f2)[i - 1])) is not None]
    assert [fields_of(m) for m in out] == [expected]
    assert d.stats.duplicate_fragments == len(order) - 2
    # a copy is not a loss: nothing dropped, nothing malformed, before and after the end of input
    d.flush()
    assert d.stats.malformed_total == 0 and d.stats.fragments_dropped == 0 and d.stats.messages == 1
    assert d.stats.as_dict()["duplicate_fragments"] == len(order) - 2


def test_a_repeat_after_the_window_is_a_new_message_not_a_duplicate():
    """A vessel sends its type 5 again six minutes later; a receiver may give it the same id: decode it again."""
    (f1, f2), expected = REAL["AVANTI"]
    now = [T0_S * 10**9]
    d = ais.AisDecoder(clock_ns=lambda: now[0])
    assert fields_of(d.feed(f"{f1}\n{f2}\n")[0]) == expected
    now[0] += 360 * 10**9
    assert [fields_of(m) for m in d.feed(f"{f1}\n{f2}\n")] == [expected]
    assert d.stats.duplicate_fragments == 0 and d.stats.messages == 2


def renumber(line: str, seq: str, channel: str) -> str:
    """The same sentence as a receiver that numbers it ``seq`` (or leaves the id empty) on ``channel`` writes it."""
    f = line[1 : line.rindex("*")].split(",")
    f[3], f[4] = seq, channel
    body = ",".join(f)
    return f"!{body}*{_cs(body)}"


def test_feeds_without_sequential_ids_with_repeating_trailing_fragments():
    """A forwarder that leaves the id empty puts every two-part message of a channel under one key. SEA ENTERPRISE
    and GERO-B (real) end in the same fragment 2 (all padding): GERO-B's is no copy of SEA ENTERPRISE's."""
    lines = [renumber(s, "", "A") for name in ("SEA ENTERPRISE", "GERO-B") for s in REAL[name][0]]
    assert lines[1] == lines[3]  # the very same second sentence
    d = dec()
    out = [fields_of(m) for s in lines if (m := d.feed_line(s)) is not None]
    assert out == [REAL["SEA ENTERPRISE"][1], REAL["GERO-B"][1]]
    assert d.stats.duplicate_fragments == 0 and d.stats.malformed_total == 0
    # and a true copy of the whole pair right after is still recognised as one
    assert d.feed(f"{lines[2]}\n{lines[3]}\n") == [] and d.stats.duplicate_fragments == 2


def test_a_repeat_with_a_later_tag_time_is_new_even_if_the_receive_clock_stands_still():
    (f1, f2), expected = REAL["TUI MAYA"]
    d = dec()  # a receive clock that does not move (a simulation, a replay through a socket)
    for t in (T0_S, T0_S + 60):
        out = [m for s in (tag(f1, c=t), tag(f2, c=t)) if (m := d.feed_line(s)) is not None]
        assert [(fields_of(m), m.time_ns) for m in out] == [(expected, t * 10**9)]
    assert d.stats.duplicate_fragments == 0


# ------------------------------------------------------------------------------------------------ reused ids
def test_a_reused_id_after_expiry_never_takes_the_old_fragment():
    a = type5(244000001, "ALPHA", "PA0001", seq=3)
    b = type5(244000002, "BRAVO", "PB0002", seq=3)
    assert decode_type5(a) == (244000001, "PA0001", "ALPHA") and decode_type5(b) == (244000002, "PB0002", "BRAVO")
    now = [T0_S * 10**9]
    d = ais.AisDecoder(clock_ns=lambda: now[0])
    assert d.feed_line(a[0]) is None  # ALPHA's second fragment is lost
    now[0] += 3 * 10**9  # longer than the 2 s window
    assert d.feed_line(b[1]) is None  # BRAVO's fragment 2 first: it must not complete ALPHA
    assert d.stats.malformed["incomplete_message"] == 1 and d.stats.fragments_dropped == 1
    m = d.feed_line(b[0])
    assert fields_of(m) == (244000002, "PB0002", "BRAVO") and d.stats.messages == 1
    d.flush()
    assert d.stats.malformed_total == 1 and d.buffered_fragments == 0


def test_two_messages_under_one_id_at_once_are_not_guessed_apart():
    """Two receivers merged without tag blocks both number a message 3 on channel A at the same moment: which
    second fragment belongs to which first fragment cannot be told, so neither is assembled (never a mix)."""
    a = type5(244000001, "ALPHA", "PA0001", seq=3)
    b = type5(244000002, "BRAVO", "PB0002", seq=3)
    d = dec()
    out = [d.feed_line(s) for s in (a[0], b[0], a[1], b[1])]
    assert out == [None] * 4 and d.stats.messages == 0
    assert d.stats.malformed["ambiguous_fragment"] == 2
    d.flush()
    assert d.stats.malformed["incomplete_message"] == 2 and d.stats.fragments_dropped == 4
    assert d.buffered_fragments == 0


# ------------------------------------------------------------------------------------------------ tag blocks
def test_tag_block_group_joins_fragments_whose_followers_carry_only_g():
    (f1, f2), expected = REAL["TUI MAYA"]
    d = dec()
    assert d.feed_line(tag(f2, g="2-2-4711")) is None  # the follower first, with no s: and no c:
    m = d.feed_line(tag(f1, g="1-2-4711", s="rx1", c=T0_S - 30))
    assert fields_of(m) == expected
    assert m.time_ns == (T0_S - 30) * 10**9 and m.time_source == "tag_block" and m.source_station == "rx1"


def test_groups_and_stations_keep_two_receivers_apart_under_one_id():
    a = type5(244000001, "ALPHA", "PA0001", seq=3)
    b = type5(244000002, "BRAVO", "PB0002", seq=3)
    for label, ta, tb in [
        ("groups", (dict(g="1-2-11", s="rx1"), dict(g="2-2-11")), (dict(g="1-2-12", s="rx2"), dict(g="2-2-12"))),
        ("stations", (dict(s="rx1"), dict(s="rx1")), (dict(s="rx2"), dict(s="rx2"))),
    ]:
        d = dec()
        lines = [tag(a[0], **ta[0]), tag(b[0], **tb[0]), tag(b[1], **tb[1]), tag(a[1], **ta[1])]
        out = [m for s in lines if (m := d.feed_line(s)) is not None]
        assert [(fields_of(m), m.source_station) for m in out] == [
            ((244000002, "PB0002", "BRAVO"), "rx2"), ((244000001, "PA0001", "ALPHA"), "rx1")], label
        assert d.stats.malformed_total == 0, label


# ------------------------------------------------------------------------------------------------ bounds
def test_a_flood_of_unmatched_fragments_stays_bounded_and_counted():
    d = dec(max_buffered_fragments=64)
    n = 3000
    for i in range(n):  # every fragment from another station: no key limit applies, only the buffer's
        d.feed_line(tag(sentence("AIVDM", 2, 1 + i % 2, str(i % 10), "AB"[i % 2], f"5{i:08d}", 0), s=f"rx{i}"))
        assert d.buffered_fragments <= 64
    assert d.stats.malformed["fragment_overflow"] == n - d.buffered_fragments
    assert d.stats.fragments_dropped + d.buffered_fragments == n
    (f1, f2), expected = REAL["SEA ENTERPRISE"]
    assert fields_of(d.feed(f"{f2}\n{f1}\n")[0]) == expected  # still working after the flood
    d.flush()
    assert d.buffered_fragments == 0 and d.stats.fragments_dropped == n


def test_a_flood_under_one_key_is_capped_per_key():
    d = dec()
    for i in range(200):  # 200 different first fragments, all "id 1 on channel A"
        d.feed_line(sentence("AIVDM", 2, 1, "1", "A", f"5{i:08d}", 0))
    assert d.buffered_fragments == 4 and d.stats.malformed["fragment_overflow"] == 196


def test_default_limits_are_documented_values():
    d = ais.AisDecoder()
    assert ais.FRAGMENT_TIMEOUT_S == 2.0 and d._fragment_timeout_ns == 2 * 10**9
    assert d._max_buffered == ais.MAX_BUFFERED_FRAGMENTS == 1024
    with pytest.raises(ValueError):
        ais.AisDecoder(max_buffered_fragments=3)
    with pytest.raises(ValueError):
        ais.AisDecoder(fragment_timeout_s=0)


# ------------------------------------------------------------------------------------------------ logs
def test_log_without_time_expires_fragments_by_sentence_count(tmp_path):
    """Read from a file, the receive clock barely moves: a fragment waiting 200 sentences is stale anyway."""
    a = type5(244000001, "ALPHA", "PA0001", seq=3)
    b = type5(244000002, "BRAVO", "PB0002", seq=3)
    (pos,) = pyais.encode_dict({"msg_type": 1, "mmsi": 244000009, "lat": 52.8, "lon": 5.7}, talker_id="AI",
                               sentence_type="VDM")
    p = tmp_path / "untimed.nmea"
    p.write_text("\n".join([a[0]] + [pos] * 200 + [b[1], b[0]]) + "\n")
    d = ais.AisDecoder()
    msgs = list(ais.read_file(p, d))
    assert [fields_of(m) for m in msgs if m.msg_type == 5] == [(244000002, "PB0002", "BRAVO")]
    assert d.stats.malformed == {"incomplete_message": 1} and d.stats.fragments_dropped == 1


def test_tagged_log_expires_fragments_on_its_own_time(tmp_path):
    a = type5(244000001, "ALPHA", "PA0001", seq=3)
    b = type5(244000002, "BRAVO", "PB0002", seq=3)
    p = tmp_path / "tagged.nmea"
    p.write_text("\n".join([tag(a[0], c=T0_S), tag(b[1], c=T0_S + 5), b[0]]) + "\n")
    d = ais.AisDecoder()
    (m,) = list(ais.read_file(p, d))
    assert fields_of(m) == (244000002, "PB0002", "BRAVO") and m.time_ns == (T0_S + 5) * 10**9
    assert d.stats.malformed == {"incomplete_message": 1}


def _mixed_log(tmp_path):
    """Position reports of ten vessels; the odd ones without a tag block, the first line untimed too."""
    lines, times = [], {}
    for i in range(10):
        (s,) = pyais.encode_dict({"msg_type": 1, "mmsi": 244000100 + i, "lat": 52.80 + i / 1000, "lon": 5.70,
                                  "speed": 3.0, "course": 90.0}, talker_id="AI", sentence_type="VDM")
        if i % 2:
            lines.append(tag(s, s="rx1", c=T0_S + 10 * i))
            times[244000100 + i] = (T0_S + 10 * i) * 10**9
        else:
            lines.append(s)
    p = tmp_path / "mixed.nmea"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_untimed_lines_of_a_log_take_the_last_timed_lines_time(tmp_path):
    msgs = list(ais.read_file(_mixed_log(tmp_path)))
    got = [(m.mmsi, m.time_ns // 10**9 - T0_S, m.time_source) for m in msgs]
    assert got == [
        (244000100, 10, "carried"),  # before the first timed line: that line's time, never the wall clock
        (244000101, 10, "tag_block"), (244000102, 10, "carried"),
        (244000103, 30, "tag_block"), (244000104, 30, "carried"),
        (244000105, 50, "tag_block"), (244000106, 50, "carried"),
        (244000107, 70, "tag_block"), (244000108, 70, "carried"),
        (244000109, 90, "tag_block"),
    ]


def test_a_live_feed_still_times_untagged_lines_by_the_receive_clock():
    (s,) = pyais.encode_dict({"msg_type": 1, "mmsi": 244000100, "lat": 52.8, "lon": 5.7}, talker_id="AI",
                             sentence_type="VDM")
    d = ais.AisDecoder(clock_ns=lambda: 123 * 10**18 // 100)
    assert d.feed_line(tag(s, c=T0_S)).time_source == "tag_block"
    m = d.feed_line(s)
    assert m.time_source == "receiver" and m.time_ns == 123 * 10**18 // 100


def test_rmc_and_tag_block_times_in_one_log(tmp_path):
    """The latest timed line wins: an RMC fix, then a tag block, each gives its time to the lines after it."""
    (s,) = pyais.encode_dict({"msg_type": 1, "mmsi": 244000200, "lat": 52.8, "lon": 5.7}, talker_id="AI",
                             sentence_type="VDM")
    rmc = "$GPRMC,213950.00,A,5250.53669,N,00542.34920,E,0.020,,070420,,,A*7D"  # real, Lemmer log line 8
    p = tmp_path / "both.nmea"
    p.write_text("\n".join([s, rmc, s, tag(s, c=1586295600), s]) + "\n")
    msgs = list(ais.read_file(p, ais.AisDecoder(use_rmc_time=True)))
    assert [(m.time_ns // 10**9, m.time_source) for m in msgs] == [
        (1586295590, "gnss_rmc"), (1586295590, "gnss_rmc"), (1586295600, "tag_block"), (1586295600, "carried")]


def test_ais_show_on_a_mixed_log_summarises_at_the_logs_newest_time(tmp_path, capsys):
    from seawatch.vision.identity import cmd_ais_show

    p = argparse.ArgumentParser()
    cmd_ais_show.add_arguments(p)
    assert cmd_ais_show.run(p.parse_args([str(_mixed_log(tmp_path)), "--max-age", "600", "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["time_ns"] == (T0_S + 90) * 10**9  # the log's newest time, not the wall clock
    assert len(doc["vessels"]) == 10  # every vessel, tagged or not, is live at the log's end
    ages = {v["mmsi"]: (doc["time_ns"] - v["last_seen_ns"]) / 1e9 for v in doc["vessels"]}
    assert ages[244000100] == 80 and ages[244000101] == 80 and ages[244000108] == 20 and ages[244000109] == 0


def test_ais_show_on_a_real_log_with_tag_blocks_on_some_lines(shared_media, tmp_path, capsys):
    """The real pyais sample (no times) with a tag block on every third line, one second per line: the same 167
    vessels as the untimed file, summarised at the last tag time."""
    from seawatch.vision.identity import cmd_ais_show

    src = shared_media / "F_ais" / "ais_pyais_nmea_data_sample.txt"
    if not src.is_file():
        from conftest import missing

        missing(f"{src} is absent")
    lines = src.read_text(encoding="ascii").splitlines()
    out, last = [], None
    for i, line in enumerate(lines):
        if i % 3 == 0:
            last = T0_S + i
            out.append(tag(line, s="aishub", c=last))
        else:
            out.append(line)
    p = tmp_path / "sample_partly_tagged.nmea"
    p.write_text("\n".join(out) + "\n")
    parser = argparse.ArgumentParser()
    cmd_ais_show.add_arguments(parser)
    assert cmd_ais_show.run(parser.parse_args([str(p), "--max-age", "3600", "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["time_ns"] == last * 10**9
    assert len(doc["vessels"]) == 167 and doc["stats"]["messages"] == 778
    assert doc["stats"]["malformed"] == {"empty_payload": 100, "incomplete_message": 20}
    assert all(0 <= doc["time_ns"] - v["last_seen_ns"] <= len(lines) * 10**9 for v in doc["vessels"])
