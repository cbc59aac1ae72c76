"""Language codes: the ISO 639-1 code people write in the config (and in ``Video.ko.srt``),
mapped to the FLORES-200 code NLLB expects. Whisper takes the ISO code as it is."""

from __future__ import annotations

NLLB_CODES: dict[str, str] = {
    "ja": "jpn_Jpan",
    "ko": "kor_Hang",
    "en": "eng_Latn",
    "zh": "zho_Hans",
    "es": "spa_Latn",
    "fr": "fra_Latn",
    "de": "deu_Latn",
}


def nllb_code(language: str) -> str:
    try:
        return NLLB_CODES[language]
    except KeyError:
        raise ValueError(f"unsupported language {language!r}; known: {', '.join(sorted(NLLB_CODES))}") from None
