"""Vietnamese personal names for the synthetic province, and the ways registries garble them.

Names are family–middle–given. Family-name shares follow published estimates for Viet Nam
(Nguyễn ≈ 38 %, Trần ≈ 11 %, Lê ≈ 9.5 %, Phạm ≈ 7 %, …); middle and given names are gendered and
drawn with a Zipf-like skew. The canonical spelling is NFC with the modern tone placement
(``hòa``, ``thúy``); the variants below are what the data faults of §5 inject.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

FAMILY_NAMES: tuple[tuple[str, float], ...] = (
    ("Nguyễn", 38.4), ("Trần", 11.0), ("Lê", 9.5), ("Phạm", 7.1), ("Hoàng", 5.1), ("Phan", 4.5),
    ("Vũ", 3.9), ("Đặng", 2.1), ("Bùi", 2.0), ("Đỗ", 1.4), ("Hồ", 1.3), ("Ngô", 1.3), ("Dương", 1.0),
    ("Lý", 0.5), ("Đào", 0.9), ("Đoàn", 0.8), ("Trịnh", 0.8), ("Đinh", 0.8), ("Mai", 0.6), ("Vương", 0.5),
    ("Trương", 0.6), ("Lương", 0.5), ("Hà", 0.5), ("Lưu", 0.4), ("Cao", 0.4), ("Phùng", 0.4), ("Tô", 0.3),
    ("Lâm", 0.3), ("Tạ", 0.3), ("Chu", 0.3), ("Quách", 0.2), ("Kiều", 0.2), ("Khúc", 0.2), ("Mạc", 0.2),
    ("Nghiêm", 0.1), ("Thái", 0.2), ("Triệu", 0.2), ("Văn", 0.1), ("La", 0.1), ("Lại", 0.2),
)

MIDDLE_MALE = ("Văn", "Đức", "Minh", "Quang", "Hữu", "Công", "Thành", "Xuân", "Ngọc", "Trung", "Anh", "Tuấn",
               "Mạnh", "Đình", "Gia", "Hoàng", "Bá", "Tiến", "Việt", "Quốc")
MIDDLE_FEMALE = ("Thị", "Ngọc", "Thu", "Thanh", "Minh", "Phương", "Hồng", "Kim", "Bảo", "Thùy", "Hà", "Mai",
                 "Khánh", "Diệu", "Quỳnh", "Thúy", "Hải", "Lan")
GIVEN_MALE = ("Anh", "Hùng", "Dũng", "Tuấn", "Minh", "Nam", "Huy", "Hải", "Long", "Thắng", "Sơn", "Cường", "Đức",
              "Tùng", "Quân", "Hiếu", "Phúc", "Khoa", "Bình", "Thành", "Trung", "Hòa", "Quang", "Lâm", "Việt",
              "Toàn", "Vinh", "Kiên", "Khánh", "Duy", "Hưng", "Tiến", "Hoàng", "Đạt", "Thịnh", "Lộc", "Tài",
              "Phong", "Bảo", "Khải", "Thủy", "Hiệp", "Tú", "Chiến", "Thuận", "Lợi", "Hoan", "Nghĩa")
GIVEN_FEMALE = ("Linh", "Hương", "Lan", "Hằng", "Trang", "Thảo", "Hà", "Ngọc", "Mai", "Anh", "Huyền", "Nhung",
                "Thủy", "Thúy", "Yến", "Hạnh", "Phương", "Hoa", "Dung", "Vân", "Nga", "Loan", "Oanh", "Hòa",
                "Nhi", "Vy", "Quỳnh", "Giang", "Chi", "Thư", "Uyên", "Tâm", "Hiền", "My", "Trinh", "Nhàn",
                "Xuân", "Thoa", "Hồng", "Liên", "Khuê", "Thụy", "Tuyết", "Hoài")


def zipf_weights(n: int, exponent: float = 0.9) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


FAMILY = tuple(name for name, _ in FAMILY_NAMES)
FAMILY_P = np.array([share for _, share in FAMILY_NAMES]) / sum(share for _, share in FAMILY_NAMES)
MIDDLE = (MIDDLE_MALE, MIDDLE_FEMALE)
MIDDLE_P = (np.r_[0.35, 0.65 * zipf_weights(len(MIDDLE_MALE) - 1)], np.r_[0.5, 0.5 * zipf_weights(len(MIDDLE_FEMALE) - 1)])
GIVEN = (GIVEN_MALE, GIVEN_FEMALE)
GIVEN_P = (zipf_weights(len(GIVEN_MALE)), zipf_weights(len(GIVEN_FEMALE)))

_TONES = "\u0300\u0301\u0303\u0309\u0323"
_OLD_TONE = re.compile(rf"([oOuU])([{_TONES}])([aAeEyY])(?![^\W\d_])")


def strip_diacritics(text: str) -> str:
    """``Nguyễn Đức`` → ``Nguyen Duc``: what a system without Vietnamese input stores."""
    decomposed = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def old_tone_placement(text: str) -> str:
    """Move the tone of open ``oa``/``oe``/``uy`` syllables to the second vowel (``hòa`` → ``hoà``)."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", _OLD_TONE.sub(r"\1\3\2", decomposed))


def to_nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def full_name(family: str, middle: str, given: str) -> str:
    return " ".join(part for part in (family, middle, given) if part)
