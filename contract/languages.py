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


# How subtitle file names and media tags spell each language (ISO 639-1, 639-2/B and /T, the
# English name, the usual region forms), lower case: what Plex, Jellyfin and Kodi recognise.
LANGUAGE_TAGS: dict[str, tuple[str, ...]] = {
    "ja": ("ja", "jp", "jpn", "japanese", "ja-jp"),
    "ko": ("ko", "kor", "korean", "ko-kr"),
    "en": ("en", "eng", "english", "en-us", "en-gb"),
    "zh": ("zh", "chi", "zho", "chinese", "zh-cn", "zh-hans", "zh-tw", "zh-hant"),
    "es": ("es", "spa", "spanish", "es-es", "es-419"),
    "fr": ("fr", "fre", "fra", "french", "fr-fr"),
    "de": ("de", "ger", "deu", "german", "de-de"),
}


def language_tags(language: str) -> tuple[str, ...]:
    return LANGUAGE_TAGS.get(language, (language,))


# English names for the languages people meet in a media library, as ``status`` words them
# ("speech is English (p 0.97), not Japanese"); any other code is shown as it is.
LANGUAGE_NAMES: dict[str, str] = {
    "ja": "Japanese", "ko": "Korean", "en": "English", "zh": "Chinese", "yue": "Cantonese", "es": "Spanish",
    "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese", "ru": "Russian", "ar": "Arabic",
    "hi": "Hindi", "th": "Thai", "vi": "Vietnamese", "id": "Indonesian", "ms": "Malay", "tl": "Tagalog",
    "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "uk": "Ukrainian", "sv": "Swedish", "fi": "Finnish",
    "no": "Norwegian", "da": "Danish", "cs": "Czech", "el": "Greek", "he": "Hebrew", "hu": "Hungarian",
    "ro": "Romanian", "la": "Latin", "jw": "Javanese", "nn": "Nynorsk",
}  # fmt: skip


def language_name(language: str) -> str:
    """``English`` for ``en``; a code with no name here, as it is."""
    return LANGUAGE_NAMES.get(language, language)


def language_code(tag: str) -> str | None:
    """The ISO 639-1 code a media tag or file-name tag stands for (``jpn`` → ``ja``), if known."""
    lowered = tag.strip().lower()
    return next((code for code, tags in LANGUAGE_TAGS.items() if lowered in tags), None)
