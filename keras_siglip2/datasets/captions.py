"""Grammar of the scenes dataset: captions, referring expressions and class names.

Five languages (`LANGUAGES`): English, German, Spanish, Russian and Chinese. Each language is
one small class of word tables and templates. German adjectives agree with the noun's gender and
case (nominative in captions, dative after "links von", "über"...), Spanish ones with gender,
Russian ones with gender and case (nominative, genitive after "слева от", instrumental after
"над"/"под"). Attributes are ids into `SHAPES`, `COLOURS`, `SIZES`, `TEXTURES`.

Which words a referring expression needs is decided once for all languages by `referring_plan`:
colour + shape if that is unique in the image, else + size, else + texture, else the full
description plus a relation ("left of", "right of", "above", "below") to another object that
has a unique description of its own.
"""

from typing import NamedTuple

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "heart")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
SIZES = ("small", "large")
TEXTURES = ("solid", "striped", "dotted")
BACKGROUNDS = ("white", "grey", "black")
LANGUAGES = ("en", "de", "es", "ru", "zh")
ATTRIBUTES = ("colour", "shape", "size", "texture")
RELATIONS = ("left of", "right of", "above", "below")
# Referring-expression attribute sets, tried in this order (shape is always named).
_LEVELS = (("colour",), ("size", "colour"), ("size", "colour", "texture"))
_ALL = ("size", "colour", "texture")


class SceneObject(NamedTuple):
    """One object: attribute ids and its box (y0, x0, y1, x1) in [0, 1].

    Example:
    >>> SceneObject(shape=0, colour=0, size=1, texture=0, box=(0.7, 0.1, 0.9, 0.3)).position()
    6
    """

    shape: int
    colour: int
    size: int
    texture: int
    box: tuple

    def position(self):
        """Cell of a 3×3 grid holding the box centre: row * 3 + column."""
        y0, x0, y1, x1 = self.box
        row, col = (min(int(1.5 * (a + b)), 2) for a, b in ((y0, y1), (x0, x1)))
        return row * 3 + col


class Reference(NamedTuple):
    """What a referring expression says: the target's attributes (besides its shape), and
    optionally a relation (index into `RELATIONS`) to an anchor object and its attributes."""

    attributes: tuple
    relation: int = None
    anchor: int = None
    anchor_attributes: tuple = None


def _key(obj, attributes):
    return (obj.shape,) + tuple(getattr(obj, a) for a in attributes)


def _unique_attributes(index, objects):
    """The first of `_LEVELS` that tells `objects[index]` from every other object, or None."""
    for attributes in _LEVELS:
        key = _key(objects[index], attributes)
        if sum(_key(o, attributes) == key for o in objects) == 1:
            return attributes
    return None


def _holds(obj, relation, anchor, strict):
    """Whether `obj` is `RELATIONS[relation]` `anchor`: box-separated (strict) or by centres."""
    (y0, x0, y1, x1), (ay0, ax0, ay1, ax1) = obj.box, anchor.box
    if strict:
        return (x1 <= ax0, ax1 <= x0, y1 <= ay0, ay1 <= y0)[relation]
    cy, cx, acy, acx = (y0 + y1) / 2, (x0 + x1) / 2, (ay0 + ay1) / 2, (ax0 + ax1) / 2
    return (cx < acx, cx > acx, cy < acy, cy > acy)[relation]


def _relational_reference(index, objects):
    """The full description plus a relation to the nearest anchor that makes it unique."""
    obj = objects[index]
    look_alikes = [
        o for j, o in enumerate(objects) if j != index and _key(o, _ALL) == _key(obj, _ALL)
    ]
    centres = [((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2) for o in objects]
    distances = [(y - centres[index][0]) ** 2 + (x - centres[index][1]) ** 2 for y, x in centres]
    for j in sorted(range(len(objects)), key=distances.__getitem__):
        anchor_attributes = None if j == index else _unique_attributes(j, objects)
        if anchor_attributes is None:
            continue
        for relation in range(len(RELATIONS)):
            if _holds(obj, relation, objects[j], True) and not any(
                _holds(o, relation, objects[j], False) for o in look_alikes
            ):
                return Reference(_ALL, relation, j, anchor_attributes)
    return None


def referring_plan(objects):
    """The `Reference` of each object, or None for an object no rule identifies uniquely.

    A relation is used only for objects whose whole appearance is repeated: the target's box
    must lie strictly on that side of the anchor's, and no look-alike's centre may lie on
    that side of the anchor's centre. Anchors are tried nearest first.

    Example:
    >>> objs = [SceneObject(0, 0, 0, 0, (0.1, 0.1, 0.3, 0.3)),
    ...         SceneObject(0, 0, 1, 0, (0.1, 0.6, 0.5, 1.0)),
    ...         SceneObject(0, 4, 0, 0, (0.6, 0.1, 0.8, 0.3))]
    >>> [r.attributes for r in referring_plan(objs)]
    [('size', 'colour'), ('size', 'colour'), ('colour',)]
    >>> twins = [SceneObject(0, 0, 0, 0, (0.1, 0.1, 0.3, 0.3)),
    ...          SceneObject(0, 0, 0, 0, (0.1, 0.6, 0.3, 0.8)),
    ...          SceneObject(1, 4, 0, 0, (0.6, 0.4, 0.8, 0.6))]
    >>> referring_plan(twins)[0]
    Reference(attributes=('size', 'colour', 'texture'), relation=0, anchor=2,
              anchor_attributes=('colour',))
    """
    plans = []
    for i in range(len(objects)):
        attributes = _unique_attributes(i, objects)
        plans.append(Reference(attributes) if attributes else _relational_reference(i, objects))
    return plans


def _join(items, conjunction):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + conjunction + items[-1]


class _Grammar:
    def names(self, attribute):
        return tuple(getattr(self, attribute + "s"))


class _English(_Grammar):
    shapes = SHAPES
    colours = COLOURS
    sizes = SIZES
    textures = TEXTURES
    backgrounds = BACKGROUNDS
    positions = (
        "at the top left", "at the top", "at the top right", "on the left", "in the centre",
        "on the right", "at the bottom left", "at the bottom", "at the bottom right",
    )
    relations = ("left of", "right of", "above", "below")
    adjective_templates = ("a photo of the {} object", "the {} object", "the object is {}")
    noun_templates = ("a photo of a {}", "a {}", "the {}")

    def phrase(self, obj, attributes):
        words = [self.sizes[obj.size]] if "size" in attributes else []
        words.append(self.colours[obj.colour])
        if "texture" in attributes:
            words.append(self.textures[obj.texture])
        return " ".join(words + [self.shapes[obj.shape]])

    def caption(self, objects, background):
        items = [f"a {self.phrase(o, _ALL)} {self.positions[o.position()]}" for o in objects]
        return f"{_join(items, ' and ')} on a {self.backgrounds[background]} background"

    def refer(self, obj, reference, anchor=None):
        text = "the " + self.phrase(obj, reference.attributes)
        if reference.relation is None:
            return text
        anchor_text = self.phrase(anchor, reference.anchor_attributes)
        return f"{text} {self.relations[reference.relation]} the {anchor_text}"


class _German(_Grammar):
    shapes = ("Kreis", "Quadrat", "Dreieck", "Raute", "Stern", "Kreuz", "Herz")
    dative_shapes = shapes[:-1] + ("Herzen",)  # dem Herzen
    genders = ("m", "n", "n", "f", "m", "n", "n")
    colours = (
        "rot", "orangefarben", "gelb", "grün", "blau", "violett", "rosafarben", "braun",
    )
    sizes = ("klein", "groß")
    textures = ("einfarbig", "gestreift", "gepunktet")
    backgrounds = ("auf weißem Hintergrund", "auf grauem Hintergrund", "auf schwarzem Hintergrund")
    positions = (
        "oben links", "oben", "oben rechts", "links", "in der Mitte", "rechts", "unten links",
        "unten", "unten rechts",
    )
    # Per case: article and adjective ending by gender (mixed / weak declension).
    articles = {
        "indefinite": ({"m": "ein", "n": "ein", "f": "eine"}, {"m": "er", "n": "es", "f": "e"}),
        "nominative": ({"m": "der", "n": "das", "f": "die"}, {"m": "e", "n": "e", "f": "e"}),
        "dative": ({"m": "dem", "n": "dem", "f": "der"}, {"m": "en", "n": "en", "f": "en"}),
    }
    # "von dem" contracts to "vom".
    relations = (("links vom", "links von der"), ("rechts vom", "rechts von der"),
                 ("über dem", "über der"), ("unter dem", "unter der"))
    adjective_templates = ("das Objekt ist {}", "die Form ist {}", "ein Bild: das Objekt ist {}")
    noun_templates = ("Form: {}", "ein Bild mit der Form {}", "die Form {}")

    def phrase(self, obj, attributes, case, article=True):
        gender = self.genders[obj.shape]
        articles, endings = self.articles[case]
        words = [articles[gender]] if article else []
        stems = ([self.sizes[obj.size]] if "size" in attributes else []) + [
            self.colours[obj.colour]
        ] + ([self.textures[obj.texture]] if "texture" in attributes else [])
        noun = (self.dative_shapes if case == "dative" else self.shapes)[obj.shape]
        return " ".join(words + [s + endings[gender] for s in stems] + [noun])

    def caption(self, objects, background):
        items = [f"{self.phrase(o, _ALL, 'indefinite')} {self.positions[o.position()]}"
                 for o in objects]
        return f"{_join(items, ' und ')} {self.backgrounds[background]}"

    def refer(self, obj, reference, anchor=None):
        text = self.phrase(obj, reference.attributes, "nominative")
        if reference.relation is None:
            return text
        preposition = self.relations[reference.relation][self.genders[anchor.shape] == "f"]
        anchor_text = self.phrase(anchor, reference.anchor_attributes, "dative", article=False)
        return f"{text} {preposition} {anchor_text}"


class _Spanish(_Grammar):
    shapes = ("círculo", "cuadrado", "triángulo", "rombo", "estrella", "cruz", "corazón")
    feminine = (False, False, False, False, True, True, False)
    # (masculine, feminine) forms.
    colours = (("rojo", "roja"), ("naranja",) * 2, ("amarillo", "amarilla"), ("verde",) * 2,
               ("azul",) * 2, ("morado", "morada"), ("rosa",) * 2, ("marrón",) * 2)
    sizes = (("pequeño", "pequeña"), ("grande",) * 2)
    textures = (("liso", "lisa"), ("a rayas",) * 2, ("de lunares",) * 2)
    backgrounds = ("sobre un fondo blanco", "sobre un fondo gris", "sobre un fondo negro")
    positions = (
        "arriba a la izquierda", "arriba", "arriba a la derecha", "a la izquierda",
        "en el centro", "a la derecha", "abajo a la izquierda", "abajo", "abajo a la derecha",
    )
    relations = ("a la izquierda", "a la derecha", "encima", "debajo")
    adjective_templates = ("el objeto es {}", "un objeto {}", "una foto de un objeto {}")
    noun_templates = ("una foto con forma de {}", "forma de {}", "una figura con forma de {}")

    def names(self, attribute):  # masculine singular
        return tuple(e if isinstance(e, str) else e[0] for e in getattr(self, attribute + "s"))

    def phrase(self, obj, attributes, article):
        f = self.feminine[obj.shape]
        words = [self.shapes[obj.shape], self.colours[obj.colour][f]]
        if "size" in attributes:
            words.append(self.sizes[obj.size][f])
        if "texture" in attributes:
            words.append(self.textures[obj.texture][f])
        return " ".join([article[f]] + words)

    def caption(self, objects, background):
        items = [f"{self.phrase(o, _ALL, ('un', 'una'))} {self.positions[o.position()]}"
                 for o in objects]
        return f"{_join(items, ' y ')} {self.backgrounds[background]}"

    def refer(self, obj, reference, anchor=None):
        text = self.phrase(obj, reference.attributes, ("el", "la"))
        if reference.relation is None:
            return text
        # "de el" contracts to "del".
        anchor_text = self.phrase(anchor, reference.anchor_attributes, ("del", "de la"))
        return f"{text} {self.relations[reference.relation]} {anchor_text}"


# Russian adjective endings: declension type -> case -> (masculine, feminine, neuter).
_RU_ENDINGS = {
    "hard": {"nom": ("ый", "ая", "ое"), "gen": ("ого", "ой", "ого"), "ins": ("ым", "ой", "ым")},
    "soft": {"nom": ("ий", "яя", "ее"), "gen": ("его", "ей", "его"), "ins": ("им", "ей", "им")},
    "velar": {"nom": ("ий", "ая", "ое"), "gen": ("ого", "ой", "ого"), "ins": ("им", "ой", "им")},
    "stressed": {"nom": ("ой", "ая", "ое"), "gen": ("ого", "ой", "ого"),
                 "ins": ("им", "ой", "им")},
}


class _Russian(_Grammar):
    # (nominative, genitive, instrumental) and gender index (0 m, 1 f, 2 n).
    shapes = (("круг", "круга", "кругом"), ("квадрат", "квадрата", "квадратом"),
              ("треугольник", "треугольника", "треугольником"), ("ромб", "ромба", "ромбом"),
              ("звезда", "звезды", "звездой"), ("крест", "креста", "крестом"),
              ("сердце", "сердца", "сердцем"))
    genders = (0, 0, 0, 0, 1, 0, 2)
    # (stem, declension type); a type None is an invariable phrase placed after the noun.
    colours = (("красн", "hard"), ("оранжев", "hard"), ("жёлт", "hard"), ("зелён", "hard"),
               ("син", "soft"), ("фиолетов", "hard"), ("розов", "hard"), ("коричнев", "hard"))
    sizes = (("маленьк", "velar"), ("больш", "stressed"))
    textures = (("однотонн", "hard"), ("полосат", "hard"), ("в горошек", None))
    backgrounds = ("на белом фоне", "на сером фоне", "на чёрном фоне")
    positions = ("вверху слева", "вверху", "вверху справа", "слева", "в центре", "справа",
                 "внизу слева", "внизу", "внизу справа")
    # Preposition and the case it governs.
    relations = (("слева от", "gen"), ("справа от", "gen"), ("над", "ins"), ("под", "ins"))
    adjective_templates = ("предмет {}", "этот предмет {}", "на картинке предмет {}")
    noun_templates = ("это {}", "фигура: {}", "на картинке {}")

    def names(self, attribute):  # nominative, masculine for adjectives
        if attribute == "shape":
            return tuple(forms[0] for forms in self.shapes)
        return tuple(s if t is None else s + _RU_ENDINGS[t]["nom"][0]
                     for s, t in getattr(self, attribute + "s"))

    def phrase(self, obj, attributes, case):
        gender = self.genders[obj.shape]
        adjectives = ([self.sizes[obj.size]] if "size" in attributes else []) + [
            self.colours[obj.colour]
        ] + ([self.textures[obj.texture]] if "texture" in attributes else [])
        before = [s + _RU_ENDINGS[t][case][gender] for s, t in adjectives if t is not None]
        after = [s for s, t in adjectives if t is None]
        noun = self.shapes[obj.shape][("nom", "gen", "ins").index(case)]
        return " ".join(before + [noun] + after)

    def caption(self, objects, background):
        items = [f"{self.phrase(o, _ALL, 'nom')} {self.positions[o.position()]}" for o in objects]
        return f"{_join(items, ' и ')} {self.backgrounds[background]}"

    def refer(self, obj, reference, anchor=None):
        text = self.phrase(obj, reference.attributes, "nom")
        if reference.relation is None:
            return text
        preposition, case = self.relations[reference.relation]
        return f"{text} {preposition} {self.phrase(anchor, reference.anchor_attributes, case)}"


class _Chinese(_Grammar):
    shapes = ("圆形", "正方形", "三角形", "菱形", "星形", "十字形", "心形")
    colours = ("红色", "橙色", "黄色", "绿色", "蓝色", "紫色", "粉色", "棕色")
    sizes = ("小", "大")
    textures = ("实心", "条纹", "圆点")
    backgrounds = ("白色", "灰色", "黑色")
    positions = ("左上方", "上方", "右上方", "左侧", "中间", "右侧", "左下方", "下方", "右下方")
    relations = ("左边的", "右边的", "上方的", "下方的")
    adjective_templates = ("一个{}的物体", "{}的图形", "图中有一个{}的物体")
    noun_templates = ("一个{}", "{}的图片", "图中有一个{}")

    def phrase(self, obj, attributes):
        size = self.sizes[obj.size] + "的" if "size" in attributes else ""
        texture = self.textures[obj.texture] if "texture" in attributes else ""
        return size + self.colours[obj.colour] + texture + self.shapes[obj.shape]

    def caption(self, objects, background):
        items = [f"{self.positions[o.position()]}有一个{self.phrase(o, _ALL)}" for o in objects]
        return "，".join(items) + f"，背景是{self.backgrounds[background]}的"

    def refer(self, obj, reference, anchor=None):
        text = self.phrase(obj, reference.attributes)
        if reference.relation is None:
            return text
        anchor_text = self.phrase(anchor, reference.anchor_attributes)
        return f"{anchor_text}{self.relations[reference.relation]}{text}"


_GRAMMARS = dict(zip(LANGUAGES, (_English(), _German(), _Spanish(), _Russian(), _Chinese())))


def _grammar(language):
    if language not in _GRAMMARS:
        raise ValueError(f"Unknown language {language!r}: expected one of {LANGUAGES}.")
    return _GRAMMARS[language]


def caption(objects, background, language="en"):
    """The caption naming every `SceneObject` with all its attributes and coarse position.

    Example:
    >>> objs = [SceneObject(2, 0, 1, 1, (0.0, 0.0, 0.3, 0.3)),
    ...         SceneObject(4, 4, 0, 2, (0.7, 0.7, 0.9, 0.9))]
    >>> caption(objs, 1, "en")
    'a large red striped triangle at the top left and a small blue dotted star at the bottom
    right on a grey background'
    >>> caption(objs, 1, "de")
    'ein großes rotes gestreiftes Dreieck oben links und ein kleiner blauer gepunkteter Stern
    unten rechts auf grauem Hintergrund'
    """
    grammar = _grammar(language)
    if not objects:
        raise ValueError("A caption needs at least one object.")
    return grammar.caption(objects, background)


def referring_expressions(objects, language="en", plan=None):
    """One expression per `SceneObject` following `referring_plan(objects)` (or `plan`).

    Raises ValueError when an object cannot be identified uniquely.

    Example:
    >>> objs = [SceneObject(0, 0, 0, 0, (0.1, 0.1, 0.3, 0.3)),
    ...         SceneObject(0, 0, 0, 0, (0.1, 0.6, 0.3, 0.8)),
    ...         SceneObject(4, 4, 1, 1, (0.6, 0.4, 0.8, 0.6))]
    >>> referring_expressions(objs, "en")
    ['the small red solid circle left of the blue star',
     'the small red solid circle right of the blue star', 'the blue star']
    >>> referring_expressions(objs, "de")[0]
    'der kleine rote einfarbige Kreis links vom blauen Stern'
    """
    grammar = _grammar(language)
    plan = referring_plan(objects) if plan is None else plan
    if any(p is None for p in plan):
        raise ValueError("Some object has no unique referring expression in this scene.")
    return [
        grammar.refer(o, p, None if p.anchor is None else objects[p.anchor])
        for o, p in zip(objects, plan)
    ]


def class_names(attribute, language="en"):
    """The names of an attribute's classes in `language`, in id order (dictionary forms).

    Example:
    >>> class_names("colour", "de")[:3]
    ('rot', 'orangefarben', 'gelb')
    >>> class_names("shape", "ru")[:2]
    ('круг', 'квадрат')
    """
    if attribute not in ATTRIBUTES:
        raise ValueError(f"Unknown attribute {attribute!r}: expected one of {ATTRIBUTES}.")
    return _grammar(language).names(attribute)


def prompt_templates(language="en", attribute=None):
    """Zero-shot prompt templates: format strings with one `{}` for a `class_names` entry.

    Adjectives (colour, size, texture) and shape nouns need different templates in languages
    with agreement, so `attribute` picks the set; None gives the templates that fit every
    attribute's names (only the bare name).

    Example:
    >>> [t.format(class_names("colour", "es")[0]) for t in prompt_templates("es", "colour")]
    ['el objeto es rojo', 'un objeto rojo', 'una foto de un objeto rojo']
    >>> prompt_templates("zh", "shape")[0].format(class_names("shape", "zh")[4])
    '一个星形'
    """
    grammar = _grammar(language)
    if attribute is None:
        return ["{}"]
    if attribute not in ATTRIBUTES:
        raise ValueError(f"Unknown attribute {attribute!r}: expected one of {ATTRIBUTES}.")
    return list(grammar.noun_templates if attribute == "shape" else grammar.adjective_templates)
