"""Normalising and comparing hull numbers and vessel names (Chinese and Latin).

Chinese fishing hull numbers follow province + port + 渔 + digits, e.g. 浙岱渔03891 (浙 Zhejiang, 岱 Daishan),
冀黄港渔05211 (two-character port). OCR and registries disagree in ways that carry no meaning: full-width vs
half-width characters, traditional vs simplified glyphs (粵/粤, 漁/渔, 閩/闽), spaces and dots, a trailing 号,
and letter/digit confusions inside the number (O/0, I/1, S/5, B/8). :func:`normalise_hull` removes all of
those so that equal numbers compare equal; :func:`parse_hull` checks the pattern.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# traditional (or OCR-variant) -> simplified, for the characters that occur in hull numbers and port names
VARIANTS = str.maketrans(
    {
        "粵": "粤", "漁": "渔", "遼": "辽", "閩": "闽", "蘇": "苏", "魯": "鲁", "滬": "沪", "瓊": "琼", "寧": "宁",
        "東": "东", "連": "连", "號": "号", "門": "门", "灣": "湾", "島": "岛", "陽": "阳", "臺": "台", "廣": "广",
        "龍": "龙", "興": "兴", "華": "华", "長": "长", "莊": "庄", "濱": "滨", "瀋": "沈", "溫": "温", "榮": "荣",
        "湯": "汤", "羅": "罗", "獅": "狮", "黃": "黄", "運": "运", "輔": "辅", "貨": "货", "澤": "泽", "錦": "锦",
        "蘆": "芦", "嶼": "屿", "順": "顺", "達": "达", "豐": "丰", "鳳": "凤", "餘": "余", "萊": "莱",
        "衛": "卫", "營": "营", "盤": "盘", "僑": "侨", "鎮": "镇", "縣": "县", "區": "区", "灘": "滩", "陸": "陆",
        "昇": "升", "湧": "涌", "進": "进", "岡": "冈", "鄉": "乡",
    }
)

# coastal provinces and municipalities that issue fishing hull numbers
PROVINCES = "冀辽鲁苏浙闽粤桂琼沪津"
# vessel kind after the port: fishing, fishing transport, fishing cold-storage, fishing auxiliary
_KINDS = ("渔运", "渔冷", "渔辅", "渔")
_HULL_RE = re.compile(
    rf"^(?P<province>[{PROVINCES}])(?P<port>[\u4e00-\u9fff]{{1,3}}?)(?P<kind>{'|'.join(_KINDS)})(?P<number>\d{{3,6}})$"
)
# letters OCR confuses with digits; only applied inside the number run
_DIGIT_FIX = str.maketrans({"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "|": "1", "!": "1", "Z": "2", "S": "5",
                            "B": "8", "G": "6", "T": "7"})
_DROP = re.compile(r"[\s\.\-_·•,，。:：;；'\"`/\\()（）\[\]【】]+")
_CONFUSABLE = frozenset("ODQILZSBGT|!")
_SPLIT_LAST = re.compile(r"^(.*[\s\.\-_·•,/]+)([0-9A-Z|!]{2,6})\s*$", re.S)
_NUMBER_RUN = re.compile(r"(渔运|渔冷|渔辅|渔)([0-9A-Z|!]{3,6})$")


@dataclass(frozen=True, slots=True)
class HullNumber:
    """A hull number that matches the province + port + kind + digits pattern."""

    province: str
    port: str
    kind: str
    number: str

    @property
    def text(self) -> str:
        return f"{self.province}{self.port}{self.kind}{self.number}"


def fold_width(text: str) -> str:
    """Full-width letters/digits/punctuation to half-width (NFKC), ideographic space to space."""
    return unicodedata.normalize("NFKC", text)


def _strip_latin_accents(text: str) -> str:
    """``YUEHÁI`` -> ``YUEHAI``: recognisers trained on many scripts put accents on Latin letters; registrations
    have none. Marks on non-ASCII bases are left alone."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.category(ch).startswith("M") and out and out[-1].isascii():
            continue
        out.append(ch)
    return unicodedata.normalize("NFKC", "".join(out))


def _fix_latin_number(s: str) -> str:
    """Repair letter/digit confusions in the number of a Latin registration (``SC 1O``, ``UK-l2``, ``HAI XUN I68``).

    Only the last group (after a space, dash, dot, ...), and only when it holds a real digit, nothing but digits and
    confusable letters, and follows a prefix with a letter; so ``HAI XUN`` or ``ORANJE B`` keep their letters.
    Runs before the separators are dropped: once ``SC 1O`` is ``SC1O``, prefix and number cannot be told apart.
    """
    parts = _SPLIT_LAST.match(s)
    if parts is None:
        return s
    head, last = parts.group(1), parts.group(2)
    if any(c.isdigit() for c in last) and all(c.isdigit() or c in _CONFUSABLE for c in last) \
            and any(c.isalpha() and c.isascii() for c in head):
        return head + last.translate(_DIGIT_FIX)
    return s


def normalise_hull(text: str) -> str:
    """Canonical form for comparing hull numbers: ``" 粵湛漁 9O135號"`` -> ``"粤湛渔90135"``.

    Half-width, simplified glyphs, upper case, no accents on Latin letters, no spaces or punctuation, no
    trailing 号, and letter/digit
    confusions repaired inside the digit run that follows 渔 (only there: Latin names keep their letters).
    """
    s = fold_width(_strip_latin_accents(fold_width(text).translate(VARIANTS).upper()))  # upper() can un-normalise
    s = _fix_latin_number(s)
    # free-standing combining marks (NFKC turns a lone "¨" into space + U+0308) carry nothing on a hull
    # (and letters the marks kept apart may compose once they are gone: NFKC again)
    s = unicodedata.normalize("NFKC", "".join(ch for ch in _DROP.sub("", s) if not unicodedata.category(ch).startswith("M")))
    if s.endswith("号"):
        s = s[:-1]
    m = _NUMBER_RUN.search(s)
    if m:
        s = s[: m.start(2)] + m.group(2).translate(_DIGIT_FIX)
    return s


def parse_hull(text: str) -> HullNumber | None:
    """The pattern's parts, or ``None`` when the normalised text is not a Chinese fishing hull number."""
    m = _HULL_RE.match(normalise_hull(text))
    if not m:
        return None
    return HullNumber(m["province"], m["port"], m["kind"], m["number"])


def name_key(text: str) -> str:
    """Key for comparing vessel names across sources: normalised like a hull number, spaces removed.

    ``"Hai Xun 168"`` and ``"HAIXUN 168"`` give the same key; ``"闽狮渔 06688 号"`` gives ``"闽狮渔06688"``.
    """
    return normalise_hull(text)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; each 1)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def similarity(a: str, b: str) -> float:
    """1 - edit distance / longer length, on :func:`name_key` forms; 1.0 equal, 0.0 nothing in common."""
    ka, kb = name_key(a), name_key(b)
    if not ka and not kb:
        return 0.0
    return 1.0 - levenshtein(ka, kb) / max(len(ka), len(kb))
