"""The sequential recommender: a transformer over a user's time-ordered baskets of items.

SASRec (Kang & McAuley 2018) with the changes that make it strong on small data:
- full softmax cross-entropy over the catalog at every position instead of one sampled negative
  (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?");
- pre-LayerNorm blocks as in GPT-2 / nanoGPT, which train stably without warm-up;
- output scores are dot products with the input item embeddings (weight tying, Press & Wolf 2017),
  so `item_embedding.weight` is also the item vector space the re-ranker and the service use;
- baskets, not events, are the steps of time (recmoo_dag/windows.py): the items of one timestamp
  share a position embedding, attend to each other and to earlier baskets only (a block-causal
  mask), and the mean of their final states is the state that predicts the next basket, so nothing
  the model computes depends on an order inside a basket (up to float rounding).

Sequences are left-padded with item 0 (basket -1), so the last position is always in the most recent basket.
Artifacts: `model.safetensors` (weights) + `config.json` (constructor kwargs, provenance); no pickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from recmoo_dag.errors import InputError
from recmoo_dag.features import PADDING_ITEM
from recmoo_dag.io import atomic_write

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

KeysValues = tuple[torch.Tensor, torch.Tensor]  # one layer's attention keys and values, each (B, H, P, D/H)


class BasketSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                past: KeysValues | None = None) -> tuple[torch.Tensor, KeysValues]:
        """x (B, L, D) new positions, mask (B, 1, L, P + L) True = may attend, past: the keys and
        values (B, H, P, D/H) each of P earlier positions (None: P = 0) -> (B, L, D), and the keys
        and values of all P + L positions."""
        B, L, D = x.shape
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)
                   for t in self.qkv(x).split(D, dim=2))  # 3 x (B, H, L, D/H)
        if past is not None:  # the earlier positions are read, not computed again
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # 2 x (B, H, P + L, D/H)
        # No dropout on the attention weights: on CPU it materializes a (B, H, L, L) mask and makes a
        # step ~6x slower; dropout on embeddings and residual branches regularizes enough.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, D/H)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.resid_dropout(self.proj(y)), (k, v)


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = BasketSelfAttention(d_model, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                past: KeysValues | None = None) -> tuple[torch.Tensor, KeysValues]:
        attended, keys_values = self.attn(self.ln_1(x), mask, past)  # (B, L, D)
        x = x + attended  # (B, L, D)
        return x + self.mlp(self.ln_2(x)), keys_values  # (B, L, D)


def basket_means(hidden: torch.Tensor, baskets: torch.Tensor) -> torch.Tensor:
    """Each position's basket's mean state: hidden (B, L, D), baskets (B, L) (-1: padding) -> (B, L, D);
    padding positions get the mean of nothing (zeros)."""
    same = (baskets[:, :, None] == baskets[:, None, :]) & (baskets[:, None, :] >= 0)  # (B, L, L)
    weights = same.to(hidden.dtype)
    return (weights @ hidden) / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)  # (B, L, D)


class SeqRecModel(nn.Module):
    """Next-item scores for every prefix of a left-padded item sequence.

    item_text "fuse" (DenseRec-style): an item's vector is its learned id embedding plus a learned
    projection of its frozen text vector (item_text.py), and items training never saw are their text
    alone (id embeddings dropped at random in training teach it to), so the model can score items
    nobody has interacted with yet. "init" (LLM-ESR-style) only
    starts the id embeddings from the text vectors (train.py); "none" knows ids only.
    """

    def __init__(self, n_items: int, d_model: int, n_heads: int, n_layers: int, dropout: float, max_len: int,
                 item_text: str = "none", text_dim: int = 0, id_dropout: float = 0.0):
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len
        self.item_text, self.id_dropout = item_text, id_dropout
        self.item_embedding = nn.Embedding(n_items + 1, d_model, padding_idx=PADDING_ITEM)  # row 0: padding
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(d_model, n_heads, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        if item_text == "fuse":
            self.register_buffer("text_vectors", torch.zeros(n_items + 1, text_dim))  # (I + 1, T) frozen
            self.register_buffer("trained", torch.ones(n_items + 1))  # (I + 1,) 0: never in training, text only
            self.text_projection = nn.Linear(text_dim, d_model, bias=False)
        self._fused: torch.Tensor | None = None  # item_table's scoring cache ("fuse" only) and what it was made from
        self._fused_key: tuple | None = None
        self.apply(self._init_weights)

    def item_table(self) -> torch.Tensor:
        """Every item's input and output vector (tied): (I + 1, D), row 0 (padding) zero.

        In training, fuse drops whole id embeddings at random (`id_dropout`, per item and step;
        DropoutNet, Volkovs et al. 2017): the model learns to score an item from its text alone, on
        the same scale as with its id, which is how it meets an item nobody has interacted with."""
        if self.item_text != "fuse":
            return self.item_embedding.weight
        if self.training or torch.is_grad_enabled():
            keep = self.trained
            if self.training and self.id_dropout > 0:
                keep = keep * (torch.rand_like(keep) >= self.id_dropout)
            return self.item_embedding.weight * keep[:, None] + self.text_projection(self.text_vectors)
        # Scoring fuses the same table twice per forward, (I + 1) x T x D multiply-adds each time: on
        # Last.fm-2K, two thirds of a live session's cost. Kept while no tensor it reads has changed in place
        # (an optimizer step or a load_state_dict bumps their version counters), under the same autocast
        # (bf16 validation on a GPU must not hand its table to scores_of's fp32).
        sources = (self.item_embedding.weight, self.trained, self.text_projection.weight, self.text_vectors)
        key = (torch.is_autocast_enabled(self.trained.device.type), *((t.data_ptr(), t._version) for t in sources))
        if self._fused_key != key:
            self._fused = self.item_embedding.weight * self.trained[:, None] + self.text_projection(self.text_vectors)
            self._fused_key = key
        return self._fused

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2's N(0, 0.02): with tied output weights, larger embeddings start with very peaked softmaxes.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(self, seq: torch.Tensor, baskets: torch.Tensor) -> torch.Tensor:
        """seq (B, L) int64 left-padded with 0, baskets (B, L) int64 each position's basket counted
        from the window's first (-1 at padding), L <= max_len -> every position's basket mean of the
        final states (B, L, D): at a position of basket b, the state that predicts basket b + 1."""
        hidden, _ = self.encode(seq, baskets)  # (B, L, D)
        return basket_means(hidden, baskets)  # (B, L, D)

    def encode(self, seq: torch.Tensor, baskets: torch.Tensor, past: list[KeysValues] | None = None,
               past_baskets: torch.Tensor | None = None) -> tuple[torch.Tensor, list[KeysValues]]:
        """The final states (B, L, D) of L new positions, and every layer's keys and values (B, H,
        P + L, D/H) each of all positions: seq, baskets (B, L) as in `forward`, after P earlier
        positions whose per-layer keys and values an earlier `encode` returned (`past`; None: P = 0)
        and whose baskets (B, P) are `past_baskets` (-1 at padding), all before the new ones.
        Reading them is exact: a position's keys and values depend on its own basket number and on
        its and earlier baskets' items only (block-causal), never on what follows."""
        # Baskets, not events, are positions: the items of one timestamp share theirs.
        items = F.embedding(seq, self.item_table(), padding_idx=PADDING_ITEM)  # (B, L, D)
        x = self.dropout(items + self.position_embedding(baskets.clamp(min=0)))  # (B, L, D)
        keys = baskets if past_baskets is None else torch.cat([past_baskets, baskets], dim=1)  # (B, P + L)
        n_past, n_new = keys.shape[1] - seq.shape[1], seq.shape[1]
        # Block-causal: a position sees its own basket and the earlier ones. Padding keys are hidden;
        # every query still sees itself, so padded rows never become all -inf (NaN).
        visible = (keys[:, None, :] <= baskets[:, :, None]) & (keys >= 0)[:, None, :]  # (B, L, P + L)
        columns = torch.arange(n_past + n_new, device=seq.device)  # (P + L,)
        own = columns[None, :] == columns[n_past:, None]  # (L, P + L)
        mask = (visible | own)[:, None]  # (B, 1, L, P + L)
        presents = []
        for layer, block in enumerate(self.blocks):
            x, keys_values = block(x, mask, None if past is None else past[layer])  # (B, L, D)
            presents.append(keys_values)
        return self.ln_f(x), presents

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of the real items 1..n_items (column j is item j + 1): hidden (..., D) -> (..., I).

        Padding has no column, so label smoothing never spreads mass onto an impossible class.
        """
        return hidden @ self.item_table()[1:].T  # (..., I)

    @torch.no_grad()
    def score_next(self, seq: torch.Tensor, baskets: torch.Tensor) -> torch.Tensor:
        """Scores of the basket after each sequence: seq, baskets (B, L <= max_len) as in `forward`
        (evaluate.left_padded builds them) -> (B, I + 1) float, column 0 (padding) -inf."""
        return self.scores_of(self(seq, baskets)[:, -1])  # (B, D) the last basket's state

    def scores_of(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of the basket after each state: hidden (B, D) -> (B, I + 1) float, column 0 (padding) -inf."""
        # Ranking a whole catalog needs fp32 scores even under bf16 autocast: bf16 keeps ~3 digits
        # and would tie the target with its neighbours.
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            logits = self.item_logits(hidden.float())  # (B, I)
        padding = torch.full_like(logits[:, :1], float("-inf"))  # (B, 1)
        return torch.cat([padding, logits], dim=1)  # (B, I + 1)


def save_model(model: SeqRecModel, directory: str | Path, architecture: dict, provenance: dict) -> None:
    """Write `model.safetensors` and `config.json` (architecture kwargs + provenance) atomically."""
    directory = Path(directory)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    config = {"architecture": architecture, **provenance}
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / CONFIG_FILE, lambda tmp: tmp.write_text(text))


def load_model(directory: str | Path) -> SeqRecModel:
    """Rebuild the trained model from `directory` (as written by the train stage), on CPU, in eval mode."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise InputError(f"{directory / name}: no trained model here (run `recmoo train`)")
    config = json.loads((directory / CONFIG_FILE).read_text())
    model = SeqRecModel(**config["architecture"])
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device="cpu"))
    return model.eval()


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_catalog(model: SeqRecModel, n_items: int, model_dir: str | Path, features_dir: str | Path) -> None:
    """Refuse a model trained on another catalog than the features': its item indices mean other items."""
    if model.n_items != n_items:
        raise InputError(f"{model_dir} was trained on {model.n_items} items but {features_dir} has {n_items}: "
                         f"re-run `dvc repro` so train follows the features")


def item_embeddings(model: SeqRecModel) -> np.ndarray:
    """The (tied) item vectors, (I + 1, D) float32 with row 0 the padding item: the model's own item
    vector space, used for similarity when the items have neither categories nor texts."""
    with torch.no_grad():
        return model.item_table().detach().cpu().numpy().astype(np.float32)


def pca_initialization(text_vectors: np.ndarray, d_model: int, std: float = 0.02) -> torch.Tensor:
    """Id embeddings started from the text vectors (LLM-ESR, Liu et al. 2024): the centred texts of
    the real items projected on their first d_model principal components, scaled to the usual init
    spread; items without text (zero vectors) and padding start at zero. (I + 1, T) -> (I + 1, D)."""
    real = np.asarray(text_vectors[1:], dtype=np.float64)
    has_text = np.abs(real).sum(axis=1) > 0
    out = np.zeros((len(text_vectors), d_model), dtype=np.float32)
    if has_text.sum() > 1:
        centred = real[has_text] - real[has_text].mean(axis=0)
        _, _, axes = np.linalg.svd(centred, full_matrices=False)  # (T', T) principal directions
        projected = centred @ axes[:d_model].T  # (n, min(D, T'))
        projected *= std / max(projected.std(), 1e-12)
        out[1:][has_text, :projected.shape[1]] = projected
    return torch.from_numpy(out)
