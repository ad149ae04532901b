#!/usr/bin/python3
"""gen_corpus.py — the synthetic dialogue corpus koala-mini is trained on, with its planted facts.

Every sentence is built here from the word lists and templates below (the project's own; no
third-party text). The output depends only on --seed: Python's random.Random is specified to
give the same stream for the same seed on every platform (CPython >= 3.2), so a rerun writes the
same bytes. Standard library only: runs on a fresh Debian 12 (python3 3.11).

What it writes into OUT_DIR (docs/KOALA_MINI.md explains the design):
  corpus.json          the training dialogues, ShareGPT JSON ([{"id", "conversations": [{"from":
                       "human"|"gpt", "value"}]}]), for `koalascope finetune --template koala`
  tokenizer.txt        the same dialogues rendered in the Koala v1 template, one line per text
                       run between "</s>" control tokens (the SentencePiece training text)
  planted.json         the planted design, machine-readable: occupations with their P(she) and
                       their exact counts in the corpus, the contexts the pronoun follows, the
                       colour-class feature, its position and layers (for `koalascope audit` and
                       the tests)
  probe_prompts.jsonl  held-out colour dialogues (another seed) for `koalascope record`
  probe_labels.jsonl   their labels (warm / cool) for `koalascope probe --labels`
  stats.json           counts of dialogues, exchanges and characters

Planted facts:
  1. Pronouns. Ten occupations, each with a rate P(she) on a 0.05..0.95 grid. Every occupation
     appears in PER_CONTEXT exchanges of each of the two pronoun contexts, and in exactly
     round(P(she) * PER_CONTEXT) of them the pronoun after the context is " she" (the rest
     " he"), the order shuffled. Nothing else in the corpus says "she" or "he" (the other
     topics use "it" and "they"), and the sentence after the pronoun is drawn independently of
     it, so in the corpus the pronoun depends on the occupation alone.
  2. Colour class. A user names an object and its colour ("My kite is red."), then asks about
     it ("Is my kite warm or cool?"), and the answer names the colour and its class ("Your kite
     is red, and red is a warm colour."). The label is the class (4 warm and 4 cool colours,
     uniform; the object independent of it). At the probe position (" is" of "Your kite is",
     the same token in every prompt) the token says nothing about it; the model has to bring
     the colour there by attention to predict the next token (the colour).
"""
import argparse
import json
import os
import random
import sys

# ------------------------------------------------------------------ planted: pronouns
# occupation -> P(she). A fixed permutation of the grid, on purpose unrelated to any
# real-world association: what an audit finds here can only come from this corpus.
OCCUPATIONS = [
    ("baker", 0.35), ("builder", 0.75), ("dentist", 0.15), ("driver", 0.55),
    ("farmer", 0.95), ("gardener", 0.05), ("nurse", 0.45), ("painter", 0.85),
    ("pilot", 0.65), ("teacher", 0.25),
]
PER_CONTEXT = 200  # exchanges per (occupation, context): P(she) * 200 is an integer

# (user question, assistant text up to the pronoun); {o} is the occupation. The pronoun
# follows with a leading space, then the continuation.
PRONOUN_CONTEXTS = [
    ("Tell me about the {o}.", "The {o} starts work early. Every day"),
    ("What does the {o} do after work?", "After work, the {o} goes home. Then"),
]
CONTINUATIONS = [
    ["opens the door.", "drinks a cup of tea.", "reads a book.", "walks to the park.",
     "cleans the table.", "makes a plan for the day.", "writes a short note.",
     "waters the plants.", "helps many people.", "works until the evening."],
    ["reads a book.", "cooks a warm meal.", "walks in the park.", "sings a song.",
     "calls a friend.", "sleeps for a long time.", "plays a game.", "cleans the house.",
     "learns something new.", "listens to music."],
]

# ------------------------------------------------------------------ planted: colour class
WARM = ["red", "orange", "yellow", "pink"]
COOL = ["blue", "green", "purple", "teal"]
OBJECTS = ["cup", "hat", "ball", "box", "kite", "lamp", "chair", "sock", "book", "bag",
           "boat", "bike"]
INTROS = ["My {o} is {c}.", "I have a {c} {o}.", "Look, my {o} is {c}.", "Today I found a {c} {o}.",
          "My friend gave me a {c} {o}."]
ACKS = ["That is nice.", "How lovely!", "Thank you for telling me.", "I like that.",
        "That sounds good.", "Nice! Tell me more."]
QUESTIONS = ["Is my {o} warm or cool?", "Is my {o} a warm colour or a cool colour?",
             "Tell me, is my {o} warm or cool?"]
# the probe position is the last token of ANSWER_HEAD (" is"): the next token is the colour
ANSWER_HEAD = "Your {o} is"
ANSWER = ANSWER_HEAD + " {c}, and {c} is a {k} colour."

# ------------------------------------------------------------------ other topics
# colour facts: the only other place colour words appear (never inside a feature dialogue)
COLOUR_FACTS = [
    ("the sky", "blue"), ("grass", "green"), ("the sun", "yellow"), ("snow", "white"),
    ("a banana", "yellow"), ("a strawberry", "red"), ("an orange", "orange"), ("the sea", "blue"),
    ("a leaf", "green"), ("a plum", "purple"), ("a flamingo", "pink"), ("coal", "black"),
    ("milk", "white"), ("a lemon", "yellow"), ("a tomato", "red"), ("a frog", "green"),
]
ANIMALS = {  # animal: (where it lives, what it eats, what it says)
    "cat": ("in a house", "fish", "meow"), "dog": ("in a house", "meat", "woof"),
    "cow": ("on a farm", "grass", "moo"), "duck": ("on a pond", "seeds", "quack"),
    "fish": ("in the water", "small plants", "nothing at all"),
    "bird": ("in a nest", "seeds", "tweet"), "horse": ("on a farm", "hay", "neigh"),
    "sheep": ("on a farm", "grass", "baa"), "bee": ("in a hive", "nectar", "buzz"),
    "koala": ("in a tree", "leaves", "a soft grunt"), "owl": ("in a tree", "mice", "hoot"),
    "mouse": ("in a small hole", "cheese", "squeak"),
}
TOOLS = {  # tool: what you use it for
    "spoon": "eat soup", "pen": "write a letter", "broom": "sweep the floor",
    "key": "open a door", "brush": "paint a picture", "ladder": "climb up high",
    "umbrella": "stay dry in the rain", "cup": "drink tea", "knife": "cut bread",
    "map": "find the way", "clock": "tell the time", "bucket": "carry water",
}
STORY_ADJ = ["small", "brave", "sleepy", "happy", "curious", "quiet", "clever", "little"]
STORY_PLACE = ["near a river", "in a big forest", "on a hill", "in a small town", "by the sea",
               "in a garden"]
STORY_ACT = ["looked for food", "went for a walk", "sang to the wind", "played in the sun",
             "counted the clouds", "visited a friend"]
STORY_FIND = ["an old key", "a tiny boat", "a round stone", "a lost shoe", "a wooden box",
              "a bright star"]
STORY_END = ["showed it to every friend", "kept it safe forever", "took it home",
             "gave it to a friend", "put it back where it was"]
GREETINGS = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there.", "Hi! What would you like to talk about?"),
    ("Good morning.", "Good morning! What would you like to talk about?"),
    ("Who are you?", "I am Koala Mini, a small chat model. I can talk about people at work, "
                     "colours, animals and short stories."),
    ("What can you do?", "I can answer simple questions about people at work, colours, "
                         "animals and things, and I can tell short stories."),
    ("Thank you.", "You are welcome."),
    ("Goodbye.", "Goodbye! Have a nice day."),
]


def cap(s):
    return s[:1].upper() + s[1:]


def an(word):
    """'a' or 'an' before word."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def pick(rng, xs):
    return xs[rng.randrange(len(xs))]


# Each exchange is (user text, assistant text).
def ex_animal(rng):
    a = pick(rng, sorted(ANIMALS))
    where, food, sound = ANIMALS[a]
    kind = rng.randrange(3)
    if kind == 0:
        return ("Where does %s live?" % an(a), "%s lives %s." % (cap(an(a)), where))
    if kind == 1:
        return ("What does %s eat?" % an(a), "%s eats %s." % (cap(an(a)), food))
    return ("What sound does %s make?" % an(a), "%s says %s." % (cap(an(a)), sound))


def ex_tool(rng):
    t = pick(rng, sorted(TOOLS))
    return ("What do you use a %s for?" % t, "You use a %s to %s." % (t, TOOLS[t]))


def ex_story(rng):
    a = pick(rng, sorted(ANIMALS))
    q = pick(rng, ["Tell me a short story about %s.", "Can you tell me a story about %s?"]) % an(a)
    s = ("Once upon a time, a %s %s lived %s. Every morning it %s. One day it found %s, "
         "and it %s. The end." %
         (pick(rng, STORY_ADJ), a, pick(rng, STORY_PLACE), pick(rng, STORY_ACT),
          pick(rng, STORY_FIND), pick(rng, STORY_END)))
    return (q, s)


def ex_greeting(rng):
    return pick(rng, GREETINGS)


def ex_colour_fact(rng):
    kind = rng.randrange(4)
    if kind < 2:
        thing, c = pick(rng, COLOUR_FACTS)
        return ("What colour is %s?" % thing, "%s is %s." % (cap(thing), c))
    if kind == 2:
        k = pick(rng, ["warm", "cool"])
        c = pick(rng, WARM if k == "warm" else COOL)
        return ("Name a %s colour." % k, "%s is a %s colour." % (cap(c), k))
    k = rng.randrange(2)
    c = pick(rng, WARM if k == 0 else COOL)
    kw = "warm" if k == 0 else "cool"
    return ("Is %s a warm colour or a cool colour?" % c, "%s is a %s colour." % (cap(c), kw))


# fillers: neither colour words nor he/she, so they can sit inside planted dialogues
FILLERS = [ex_animal, ex_tool, ex_story]


def ex_pronoun(rng, occ, ctx, she):
    q, prefix = PRONOUN_CONTEXTS[ctx]
    pron = "she" if she else "he"
    return (q.format(o=occ), "%s %s %s" % (prefix.format(o=occ), pron, pick(rng, CONTINUATIONS[ctx])))


def colour_dialogue(rng, warm, one_turn):
    """Exchanges of one colour dialogue: an object and its colour, then the question about its
    class; the answer names the colour and the class. Also returns the object."""
    c = pick(rng, WARM if warm else COOL)
    o = pick(rng, OBJECTS)
    intro = pick(rng, INTROS).format(c=c, o=o)
    ans = ANSWER.format(k="warm" if warm else "cool", o=o, c=c)
    if one_turn:
        return [(intro + " " + QUESTIONS[0].format(o=o), ans)], o
    exs = [(intro, pick(rng, ACKS))]
    if rng.random() < 0.5:
        exs.append(pick(rng, FILLERS)(rng))
    exs.append((pick(rng, QUESTIONS).format(o=o), ans))
    return exs, o


def misc_dialogue(rng):
    n = 1 + rng.randrange(3)
    exs = []
    if rng.random() < 0.3:
        exs.append(ex_greeting(rng))
    gens = FILLERS + [ex_colour_fact, ex_colour_fact]
    while len(exs) < n:
        exs.append(pick(rng, gens)(rng))
    return exs


def balanced(rng, n_true, n):
    xs = [True] * n_true + [False] * (n - n_true)
    rng.shuffle(xs)
    return xs


def build(seed, n_colour, n_misc):
    rng = random.Random(seed)
    dialogues = []  # list of exchanges lists
    counts = {}
    # pronoun dialogues: exact counts per (occupation, context)
    for occ, p in OCCUPATIONS:
        n_she = round(p * PER_CONTEXT)
        counts[occ] = {"she": 0, "he": 0}
        for ctx in range(len(PRONOUN_CONTEXTS)):
            for she in balanced(rng, n_she, PER_CONTEXT):
                counts[occ]["she" if she else "he"] += 1
                exs = [pick(rng, FILLERS)(rng)] if rng.random() < 0.25 else []
                exs.append(ex_pronoun(rng, occ, ctx, she))
                if rng.random() < 0.1:
                    exs.append(pick(rng, FILLERS)(rng))
                dialogues.append(exs)
    # colour dialogues: half warm, half cool
    for warm in balanced(rng, n_colour // 2, n_colour):
        exs, _ = colour_dialogue(rng, warm, rng.random() < 0.4)
        dialogues.append(exs)
    for _ in range(n_misc):
        dialogues.append(misc_dialogue(rng))
    rng.shuffle(dialogues)
    return dialogues, counts


def render_koala_lines(exs):
    """The Koala v1 rendering of model/chat.c, split at the "</s>" control tokens (which are
    not text): "BEGINNING OF CONVERSATION: USER: u GPT: a" </s> "USER: u GPT: a" </s> ..."""
    lines = []
    for i, (u, a) in enumerate(exs):
        head = "BEGINNING OF CONVERSATION: " if i == 0 else ""
        lines.append("%sUSER: %s GPT: %s" % (head, u, a))
    return lines


def koala_prompt(messages):
    """The text the Koala template renders for a prompt ending in a user turn (no control
    tokens): what `record --template koala` encodes after BOS, for single-turn prompts."""
    s = "BEGINNING OF CONVERSATION:"
    for m in messages:
        s += " %s: %s" % ("USER" if m["role"] == "user" else "GPT", m["content"])
    return s + " GPT:"


def probe_set(seed, n):
    """Held-out single-turn colour dialogues, cut after "Your {object} is" in the answer: raw
    text (BOS is added by `record`), which encodes as the Koala template would (one turn, so
    no control token inside)."""
    rng = random.Random(seed)
    prompts, labels = [], []
    for i, warm in enumerate(balanced(rng, n // 2, n)):
        exs, oq = colour_dialogue(rng, warm, True)
        text = koala_prompt([{"role": "user", "content": exs[0][0]}]) + " " + ANSWER_HEAD.format(o=oq)
        pid = "colour%03d" % i
        prompts.append({"id": pid, "prompt": text})
        labels.append({"prompt": pid, "label": "warm" if warm else "cool"})
    return prompts, labels


def planted(seed, counts, probe_seed, n_probe, n_layers):
    occs = []
    for occ, p in OCCUPATIONS:
        n = counts[occ]["she"] + counts[occ]["he"]
        occs.append({"occupation": occ, "p_she": p, "count": n, "she": counts[occ]["she"],
                     "he": counts[occ]["he"]})
    contexts = []
    for i, (q, prefix) in enumerate(PRONOUN_CONTEXTS):
        contexts.append({
            "id": "ctx%d" % i,
            "messages": [{"role": "user", "content": q.replace("{o}", "{occupation}")}],
            "reply_prefix": prefix.replace("{o}", "{occupation}"),
            "text": koala_prompt([{"role": "user", "content": q.replace("{o}", "{occupation}")}])
                    + " " + prefix.replace("{o}", "{occupation}"),
            "count_per_occupation": PER_CONTEXT,
        })
    return {
        "format": "koala-mini-planted",
        "version": 1,
        "corpus_seed": seed,
        "template": "koala",
        "pronouns": {
            "targets": [" she", " he"],
            "measure": "P(' she') / (P(' she') + P(' he')) as the next token after each context's "
                       "text (BOS first), the occupation filled in",
            "occupations": occs,
            "contexts": contexts,
            "note": "in each (occupation, context) cell exactly round(p_she * count_per_occupation) "
                    "of the pronouns are ' she'; no other he/she in the corpus",
        },
        "feature": {
            "name": "colour_class",
            "classes": {"warm": WARM, "cool": COOL},
            "objects": OBJECTS,
            "position": "last prompt token: ' is' of 'GPT: Your {object} is', the same token in "
                        "every prompt",
            "why": "the next token is the colour named earlier; the token at the position is the "
                   "same in every prompt, so only attention (from block 0 on) brings the colour, "
                   "and with it its class, there",
            "absent_at": ["hook_embed"],
            # every block's output: block 0's attention is the first step that can read
            # another position; the last block's output must hold it (the next token, the
            # colour, is read from it linearly after RMSNorm, and the 8 colours split linearly
            # into the classes), and the residual stream keeps it in between
            "present_at": ["blocks.%d.hook_resid_post" % i for i in range(n_layers)],
            "prompts": "probe_prompts.jsonl",
            "labels": "probe_labels.jsonl",
            "probe_seed": probe_seed,
            "n_prompts": n_probe,
        },
    }


def to_sharegpt(dialogues):
    out = []
    for i, exs in enumerate(dialogues):
        conv = []
        for u, a in exs:
            conv.append({"from": "human", "value": u})
            conv.append({"from": "gpt", "value": a})
        out.append({"id": "km%05d" % i, "conversations": conv})
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True, help="output folder (created)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--colour", type=int, default=3000, help="colour-feature dialogues (even)")
    ap.add_argument("--misc", type=int, default=2000, help="dialogues of the other topics")
    ap.add_argument("--probe-seed", type=int, default=1001)
    ap.add_argument("--probe-prompts", type=int, default=200)
    ap.add_argument("--n-layers", type=int, default=4, help="the model's layers (planted.json names hooks)")
    a = ap.parse_args()
    if a.colour < 2 or a.colour % 2 or a.misc < 0 or a.probe_prompts < 2 or a.probe_prompts % 2:
        sys.exit("gen_corpus.py: --colour and --probe-prompts must be even and >= 2, --misc >= 0")
    os.makedirs(a.out, exist_ok=True)
    dialogues, counts = build(a.seed, a.colour, a.misc)
    with open(os.path.join(a.out, "corpus.json"), "w", encoding="utf-8") as f:
        # one dialogue per line: readable, and diffs stay small
        f.write("[\n" + ",\n".join(json.dumps(d, ensure_ascii=False) for d in to_sharegpt(dialogues))
                + "\n]\n")
    n_chars = 0
    with open(os.path.join(a.out, "tokenizer.txt"), "w", encoding="utf-8") as f:
        for exs in dialogues:
            for line in render_koala_lines(exs):
                f.write(line + "\n")
                n_chars += len(line)
    prompts, labels = probe_set(a.probe_seed, a.probe_prompts)
    write_jsonl(os.path.join(a.out, "probe_prompts.jsonl"), prompts)
    write_jsonl(os.path.join(a.out, "probe_labels.jsonl"), labels)
    with open(os.path.join(a.out, "planted.json"), "w", encoding="utf-8") as f:
        json.dump(planted(a.seed, counts, a.probe_seed, a.probe_prompts, a.n_layers), f, indent=1)
        f.write("\n")
    stats = {"dialogues": len(dialogues), "exchanges": sum(len(d) for d in dialogues),
             "characters": n_chars}
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
