"""A tiny Gemma-like SentencePiece model, trained at test time (well under a second).

Same special-id layout and normalisation as Gemma's tokenizer: pad 0, eos 1, bos 2, unk 3,
BPE with byte fallback, no dummy prefix, whitespace kept as is, digits split.

Example:
>>> import tempfile
>>> import sentencepiece
>>> path = train_tiny_spm(tempfile.mkdtemp())
>>> sp = sentencepiece.SentencePieceProcessor(model_file=path)
>>> sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id(), sp.id_to_piece(1)
(0, 1, 2, 3, '<eos>')
"""

import os

from keras_siglip2.datasets.vocabulary import train_gemma_like

# A few dozen sentences in several scripts, mixed case on purpose so that lower-casing
# changes the ids.
SENTENCES = [
    "A photo of a cat sitting on a red sofa.",
    "Two dogs are playing in the park near the river.",
    "The quick brown fox jumps over the lazy dog.",
    "An apple with a note saying iPod.",
    "A cold drink on a hot day, 42 degrees in the shade.",
    "a picture of researchers at Google Brain",
    "THE SIGLIP AUTHORS IN FRONT OF A WHITEBOARD",
    "Eine Katze schläft auf dem Sofa. Über den Fluss führt eine Brücke.",
    "Der Hund spielt im Garten, die Straße ist nass.",
    "Une vache en smoking sur la plage à côté de l'océan.",
    "Le café est très chaud, ÉTÉ comme HIVER.",
    "Una fotografía de un perro pequeño en la montaña.",
    "Ένα μήλο πάνω στο τραπέζι. ΟΔΟΣ ΣΤΗΝ ΑΘΗΝΑ.",
    "Η γάτα κοιμάται στον καναπέ.",
    "Фотография кошки на диване. МОСКВА ЗИМОЙ.",
    "Собака играет в парке возле реки.",
    "炎热天气里一杯冷饮的照片。",
    "一只猫坐在红色的沙发上。",
    "ロックバンドの写真。猫がソファの上で寝ている。",
    "한국어 문장도 조금 있습니다. 고양이 사진.",
    "एक तस्वीर जिसमें दो लोगों को कैफीन की ज़रूरत है।",
    "صورة قطة على الأريكة الحمراء.",
    "פרה על החוף ליד הים.",
    "İstanbul'da bir kedi, Ankara'da bir köpek. IŞIK ve ılık.",
    "Slika prijenosnog računala, šalica cappuccina i jezero Zürich.",
    "foto para penulis SigLIP di depan papan tulis",
    "en kold drink på en varm dag i København",
    "OpenAI:n tutkijoiden kuva Helsingissä.",
    "Numbers 0123456789 and symbols: #, %, & and (parentheses).",
    "tufaha, айпод, ένα μήλο, apple na nóta ag rá ipod",
]

FILENAME = "tiny_gemma.model"


def train_tiny_spm(directory, vocab_size=640):
    """Trains (once per directory) the tiny model and returns the path of its `.model` file."""
    path = os.path.join(os.fspath(directory), FILENAME)
    if os.path.isfile(path):
        return path
    os.makedirs(os.fspath(directory), exist_ok=True)
    # Coverage below 1 so that the rarest characters are left to byte fallback, as in Gemma.
    proto = train_gemma_like(SENTENCES, vocab_size, character_coverage=0.98)
    with open(path, "wb") as f:
        f.write(proto)
    return path
