"""eCLIP on Ukiyo-eVG: CLIP-style training with expert heatmaps. This is the file experiments change.

The tool runs it once per fold (`autoresearch trial` / `autoresearch run`). It trains an image tower and a
text tower contrastively, adds the eCLIP expert path (heatmap processor + mixup) during training, then
embeds the fold's query images and captions and writes them with `eclip.io.write_outputs`. The tool
computes the metric from those embeddings; nothing printed here is read as a result.
"""

import contextlib
import math
import random
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from eclip.io import load_run, write_outputs
from eclip.optim import AdamW, LambdaLR   # torch.optim's arithmetic without its 1-2 s import of torch._dynamo

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
PRETRAINED_IMAGE = ""     # local timm ViT checkpoint (.safetensors/.pth) to start from; "" = random init
# Text tower: DistilBERT layout (a BERT/MiniLM checkpoint is renamed into it when loaded)
TEXT_WIDTH = 96           # hidden size (random init only; a pretrained tower brings its own)
TEXT_LAYERS = 1           # transformer layers (random init only)
TEXT_HEADS = 3            # attention heads (random init only)
TEXT_DROPOUT = 0.1        # dropout in the text tower, as DistilBERT's default (random init only)
TEXT_LEN = 32             # caption tokens kept
PHRASE_LEN = 16           # phrase tokens kept
TEXT_POOL = "cls"         # "cls": first token; "mean": mean over non-padding tokens
PRETRAINED_TEXT = ""      # local Hugging Face folder (config.json, weights, vocab.txt); "" = random init
# Heads and loss
PROJ_DIM = 128            # width of the shared embedding space
PROJ_BIAS = True          # the projections to PROJ_DIM have a bias (the seed's nn.Linear default)
HEATMAP_PATCH = 16        # patch size of the heatmap processor's image and heatmap convolutions
HEATMAP_HEADS = 4         # attention heads of the heatmap processor
SHARED_QK_NORM = True     # one LayerNorm for the heatmap processor's queries and keys (the seed's); False = two
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
WEIGHT_DECAY = 1e-4       # AdamW weight decay
DECAY_ALL = True          # decay every parameter, norms, biases and logit scale included (the seed's); False = matrices only
STEPS = 400               # optimiser steps
WARMUP_STEPS = 40         # linear warmup (LR = step / WARMUP_STEPS, 0 at the first step), then cosine decay to zero
GRAD_CLIP = 1.0           # gradient norm clipping
WISE_FT_ALPHA = 0.0       # after training, move backbone weights this far back towards their initial values
SEED_PER_FOLD = True      # fold k trains with seed + k (the seed's 42 + k); False = the same seed for every fold
# Speed (these change the numbers only within rounding)
BF16_CUDA = True          # bf16 autocast on a GPU
BF16_CPU = False          # bf16 autocast on the CPU (faster on CPUs with bf16 units; see benchmarks/train_speed.py)
TF32 = True               # TF32 for fp32 matrix products on a GPU (PyTorch's default leaves it off)
COMPILE = False           # torch.compile the towers (pays off on a GPU for long runs; not on the CPU)
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


# ---------------------------------------------------------------------------------------------------------
# Text tower: plain-PyTorch DistilBERT whose parameter names match Hugging Face's DistilBertModel
# ---------------------------------------------------------------------------------------------------------
class TextEmbeddings(nn.Module):
    def __init__(self, vocab_size, dim, max_positions, type_vocab_size, pad_id, eps, dropout):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.position_embeddings = nn.Embedding(max_positions, dim)
        # BERT layouts add a token-type embedding; every token here is of type 0.
        self.token_type_embeddings = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids):
        x = self.word_embeddings(ids) + self.position_embeddings.weight[:ids.shape[1]]
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class TextAttention(nn.Module):
    def __init__(self, dim, heads, attention_dropout, output_dropout):
        super().__init__()
        self.heads, self.attention_dropout = heads, attention_dropout
        self.q_lin, self.k_lin, self.v_lin, self.out_lin = (nn.Linear(dim, dim) for _ in range(4))
        self.out_drop = nn.Dropout(output_dropout)   # BERT drops the attention output; DistilBERT does not

    def forward(self, x, keep):
        b, n, d = x.shape
        q, k, v = (lin(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for lin in (self.q_lin, self.k_lin, self.v_lin))
        p = self.attention_dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
        return self.out_drop(self.out_lin(x.transpose(1, 2).reshape(b, n, d)))


class TextFFN(nn.Module):
    def __init__(self, dim, hidden, dropout):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.lin2(F.gelu(self.lin1(x))))


class TextBlock(nn.Module):
    """Post-norm transformer block (DistilBERT's TransformerBlock)."""

    def __init__(self, dim, heads, hidden, dropout, attention_dropout, eps, bert):
        super().__init__()
        self.attention = TextAttention(dim, heads, attention_dropout, dropout if bert else 0.0)
        self.sa_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = TextFFN(dim, hidden, dropout)
        self.output_layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x, keep):
        x = self.sa_layer_norm(x + self.attention(x, keep))
        return self.output_layer_norm(x + self.ffn(x))


class TextLayers(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.layer = nn.ModuleList(blocks)


class TextTransformer(nn.Module):
    """Token ids (padded with ``pad_id``) -> pooled feature of width ``self.width``."""

    def __init__(self, cfg, pool):
        super().__init__()
        bert = cfg["layout"] == "bert"
        self.embeddings = TextEmbeddings(cfg["vocab_size"], cfg["width"], cfg["max_positions"],
                                         cfg["type_vocab_size"], cfg["pad_id"], cfg["eps"], cfg["dropout"])
        self.transformer = TextLayers([TextBlock(cfg["width"], cfg["heads"], cfg["ffn"], cfg["dropout"],
                                                 cfg["attention_dropout"], cfg["eps"], bert)
                                       for _ in range(cfg["layers"])])
        self.pad_id, self.pool, self.width = cfg["pad_id"], pool, cfg["width"]
        self.apply(_init_text)   # DistilBERT's own initialisation (replaced when weights are loaded)

    def forward(self, ids):
        mask = ids != self.pad_id
        keep = mask[:, None, None, :]   # [b, 1, 1, n]: every query attends to the non-padding keys
        x = self.embeddings(ids)
        for block in self.transformer.layer:
            x = block(x, keep)
        if self.pool == "mean":
            m = mask.unsqueeze(-1).to(x.dtype)
            return (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        return x[:, 0]


def _init_text(module):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


def text_config(vocab_size, pad_id):
    """The random-init text tower's architecture, in eclip.weights.text_config's vocabulary."""
    return {"layout": "distilbert", "vocab_size": vocab_size, "width": TEXT_WIDTH, "layers": TEXT_LAYERS,
            "heads": TEXT_HEADS, "ffn": 4 * TEXT_WIDTH, "max_positions": max(TEXT_LEN, PHRASE_LEN),
            "type_vocab_size": 0, "pad_id": pad_id, "eps": 1e-12, "dropout": TEXT_DROPOUT,
            "attention_dropout": TEXT_DROPOUT}


# ---------------------------------------------------------------------------------------------------------
# eCLIP: towers, projections, heatmap processor, logit scale
# ---------------------------------------------------------------------------------------------------------
class HeatmapProcessor(nn.Module):
    """Expert embedding: heatmap patches attend to image patches; mean-pooled and L2-normalised."""

    def __init__(self, dim, heads, patch, shared_norm=True):
        super().__init__()
        self.image_patches = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.heatmap_patches = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = None if shared_norm else nn.LayerNorm(dim)   # None: keys share norm_q
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, images, heatmaps):
        values = self.image_patches(images).flatten(2).transpose(1, 2)
        queries = self.heatmap_patches(heatmaps).flatten(2).transpose(1, 2)
        norm_k = self.norm_q if self.norm_k is None else self.norm_k
        out, _ = self.attn(self.norm_q(queries), norm_k(values), values, need_weights=False)
        return F.normalize(out.mean(dim=1), dim=-1)


class ECLIP(nn.Module):
    def __init__(self, image_encoder, text_encoder):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.Linear(image_encoder.width, PROJ_DIM, bias=PROJ_BIAS)
        self.text_proj = nn.Linear(text_encoder.width, PROJ_DIM, bias=PROJ_BIAS)
        self.heatmap = HeatmapProcessor(PROJ_DIM, HEATMAP_HEADS, HEATMAP_PATCH, SHARED_QK_NORM)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))

    def encode_image(self, images):
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, ids):
        return F.normalize(self.text_proj(self.text_encoder(ids)), dim=-1)

    def temperature(self):
        """The effective multiplier of the logits."""
        return torch.clamp(self.logit_scale.exp(), MIN_TEMPERATURE, MAX_TEMPERATURE)


def build_model(vocab_size, pad_id):
    """The model, with pretrained tower weights loaded when PRETRAINED_IMAGE / PRETRAINED_TEXT name them."""
    from eclip import weights   # reads checkpoints by key; a missing or misshapen key is an error naming it

    vit = VisionTransformer(IMAGE_SIZE, PATCH_SIZE, VIT_WIDTH, VIT_DEPTH, VIT_HEADS, VIT_MLP_RATIO)
    try:
        if PRETRAINED_IMAGE:
            state = weights.read_state_dict(PRETRAINED_IMAGE)
            resized = weights.resample_pos_embed(state, vit.pos_embed.shape[1])
            heads = weights.load_exact(vit, state, f"PRETRAINED_IMAGE {PRETRAINED_IMAGE}", weights.VIT_HEADS,
                                       "check VIT_WIDTH, VIT_DEPTH, VIT_MLP_RATIO and PATCH_SIZE")
            print(f"loaded image weights from {PRETRAINED_IMAGE} ({heads} head keys ignored"
                  f"{', pos_embed resampled to ' + str(IMAGE_SIZE) + ' px' if resized else ''})", flush=True)
        if PRETRAINED_TEXT:
            cfg = weights.text_config(PRETRAINED_TEXT)
            if cfg["vocab_size"] != vocab_size or cfg["pad_id"] != pad_id:
                raise weights.WeightsError(
                    f"PRETRAINED_TEXT {PRETRAINED_TEXT}: the model has {cfg['vocab_size']} tokens with [PAD] = "
                    f"{cfg['pad_id']}, the prepared data {vocab_size} with [PAD] = {pad_id}; prepare the data with "
                    f"its vocabulary (`autoresearch data prepare --vocab {PRETRAINED_TEXT}/vocab.txt`)")
            text = TextTransformer({**cfg, "pad_id": pad_id}, TEXT_POOL)
            heads = weights.load_exact(text, weights.text_state(PRETRAINED_TEXT, cfg), f"PRETRAINED_TEXT {PRETRAINED_TEXT}",
                                       weights.TEXT_HEADS)
            print(f"loaded {cfg['layout']} text weights from {PRETRAINED_TEXT} ({heads} head keys ignored)", flush=True)
        else:
            text = TextTransformer(text_config(vocab_size, pad_id), TEXT_POOL)
    except weights.WeightsError as exc:
        raise SystemExit(f"error: {exc}") from None
    return ECLIP(vit, text)


def check_tokenisation(prepared_vocab_path):
    """A pretrained text tower must read ids of its own vocabulary: the prepared vocab.txt must be the model's."""
    if not PRETRAINED_TEXT:
        return
    from eclip import weights

    try:
        own = weights.check_vocab(PRETRAINED_TEXT, weights.text_config(PRETRAINED_TEXT))
    except weights.WeightsError as exc:
        raise SystemExit(f"error: {exc}") from None
    if weights.read_vocab(prepared_vocab_path) != own:
        raise SystemExit(f"error: the prepared captions were tokenised with {prepared_vocab_path}, not with the "
                         f"vocabulary of PRETRAINED_TEXT {PRETRAINED_TEXT}; re-prepare them with "
                         f"`autoresearch data prepare --vocab {PRETRAINED_TEXT}/vocab.txt`")


def info_nce(a, b, scale):
    """Symmetric InfoNCE between matched rows of a and b (both L2-normalised)."""
    logits = scale * a @ b.t()
    labels = torch.arange(a.shape[0], device=a.device)
    loss_ab = F.cross_entropy(logits, labels)
    loss_ba = F.cross_entropy(logits.t(), labels)
    return 0.5 * (loss_ab + loss_ba)


# ---------------------------------------------------------------------------------------------------------
# Data: uint8 tensors on the device, converted one batch at a time; every random draw made before training
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


def token_lengths(ids, pad_id):
    """Non-padding tokens per row (on the host: batches are trimmed without asking the device)."""
    return (ids != pad_id).sum(1)


def trimmed(lengths, limit):
    """Columns to keep for a batch: its longest text, rounded up to 8 (fewer shapes to compile), at most limit.
    Padding columns beyond every text change nothing (they are masked), so this is the seed's `padding=True`."""
    return min(limit, max(8, -(-int(lengths.max()) // 8) * 8))


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
    """Shuffled passes over the items that have phrases (as the seed's own expert loader), with one random
    phrase of each item every time it is drawn."""

    def __init__(self, phrase_item, batch_size):
        order = torch.argsort(phrase_item, stable=True)
        items, counts = torch.unique_consecutive(phrase_item[order], return_counts=True)
        self.order, self.items, self.counts = order, items, counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.batches = Batches(len(items), batch_size)

    def __len__(self):
        return len(self.items)

    def sample(self):
        pick = self.batches.next()
        offset = (torch.rand(len(pick)) * self.counts[pick]).long()
        return self.items[pick], self.order[self.starts[pick] + offset]


@dataclass
class Step:
    """One step's draws: batch indices (on the device), text widths, and the expert batch if there is one."""
    idx: torch.Tensor
    caption_len: int
    expert: tuple = None   # (items, phrase rows, caption width, phrase width, mixup lambda)


def draw_steps(train, caption_lengths, phrase_lengths, device):
    """Every step's random draws, made on the host up front and moved to the device in one copy each, so the
    training loop neither waits for the device nor does per-step host work."""
    batches = Batches(len(train), BATCH_SIZE)
    experts = ExpertSampler(train.phrase_item, BATCH_SIZE) if train.phrase_item.numel() else None
    beta = torch.distributions.Beta(torch.tensor(MIXUP_ALPHA), torch.tensor(MIXUP_ALPHA)) if MIXUP_ALPHA > 0 else None
    idx, plans = [], []
    for _ in range(STEPS):
        i = batches.next()
        idx.append(i)
        plan = [trimmed(caption_lengths[i], TEXT_LEN), None]
        if experts is not None and len(experts) > 1 and random.random() < EXPERT_PROB:
            items, which = experts.sample()
            plan[1] = (items, which, trimmed(caption_lengths[items], TEXT_LEN),
                       trimmed(phrase_lengths[which], PHRASE_LEN), beta.sample().item() if beta else 0.5)
        plans.append(plan)
    idx_dev = torch.stack(idx).to(device) if idx else None
    drawn = [e for _, e in plans if e is not None]
    if drawn:
        items_dev = torch.stack([e[0] for e in drawn]).to(device)
        which_dev = torch.stack([e[1] for e in drawn]).to(device)
    steps, k = [], 0
    for s, (caption_len, e) in enumerate(plans):
        if e is not None:
            e = (items_dev[k], which_dev[k], *e[2:])
            k += 1
        steps.append(Step(idx_dev[s], caption_len, e))
    return steps


@torch.no_grad()
def wise_ft(module, initial, alpha):
    """Move ``module``'s floating-point weights a fraction ``alpha`` of the way back to ``initial``."""
    for name, value in module.state_dict().items():
        if value.is_floating_point():
            value.mul_(1.0 - alpha).add_(initial[name].to(value.device), alpha=alpha)


def lr_factor(step):
    if step < WARMUP_STEPS:
        return step / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, STEPS - WARMUP_STEPS)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def peak_memory_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux reports KiB


@torch.no_grad()
def embed(fn, data, device, autocast, lengths=None, limit=None):
    out = []
    for i in range(0, data.shape[0], EVAL_BATCH):
        batch = data[i:i + EVAL_BATCH]
        if lengths is not None:
            batch = batch[:, :trimmed(lengths[i:i + EVAL_BATCH], limit)]
        with autocast():
            out.append(fn(batch, device).float().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------
def main():
    t_start = time.time()
    run = load_run()
    torch.set_num_threads(run.cpus)
    seed = run.seed + (run.fold or 0) if SEED_PER_FOLD else run.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = BF16_CUDA if device.type == "cuda" else BF16_CPU
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if TF32 else "highest")   # the fp32 matmuls autocast leaves
        torch.backends.cudnn.allow_tf32 = TF32

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    meta, train, queries = run.meta, run.train, run.queries
    pad_id = int(meta["pad_id"])
    check_tokenisation(run.vocab_path)
    model = build_model(int(meta["vocab_size"]), pad_id)
    model.to(device)
    if COMPILE:
        model.image_encoder.compile()
        model.text_encoder.compile(dynamic=True)
    captions, phrases = train.captions[:, :TEXT_LEN], train.phrases[:, :PHRASE_LEN]
    steps = draw_steps(train, token_lengths(captions, pad_id), token_lengths(phrases, pad_id), device)
    # The training data lives on the device for the whole run: one copy, no per-step transfers.
    images, heatmaps = train.images.to(device), train.heatmaps.to(device)
    captions, phrases = captions.to(device).long(), phrases.to(device).long()
    n_params = sum(p.numel() for p in model.parameters())
    backbones = [model.image_encoder, model.text_encoder]
    initial = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in backbones] if WISE_FT_ALPHA else []

    if DECAY_ALL:
        groups = [{"params": list(model.parameters()), "weight_decay": WEIGHT_DECAY}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
                  {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = AdamW(groups, lr=LR, fused=device.type == "cuda")
    scheduler = LambdaLR(optimizer, lr_factor)
    losses = torch.zeros(STEPS, device=device)   # read back only when a line is logged
    print(f"{run.mode} {run.fold}: {len(train)} items, {len(phrases)} phrases, {len(queries.image_ids)} queries, "
          f"{n_params / 1e6:.2f}M parameters, device {device}, seed {seed}, {run.cpus} threads", flush=True)

    model.train()
    t_train = time.time()
    setup_seconds = t_train - t_start
    for step, draw in enumerate(steps[:run.steps(STEPS)]):   # fewer only in the tool's smoke test
        with autocast():
            image_emb = model.encode_image(image_batch(images[draw.idx], device))
            text_emb = model.encode_text(captions[draw.idx, :draw.caption_len])
            scale = model.temperature()
            loss = info_nce(image_emb, text_emb, scale)
            if draw.expert is not None:
                items, which, caption_len, phrase_len, lam = draw.expert
                x = image_batch(images[items], device)
                expert = model.heatmap(x, heatmap_batch(heatmaps[items], device))
                mix = F.normalize(lam * model.encode_image(x) + (1.0 - lam) * expert, dim=-1)
                phrase_emb = model.encode_text(phrases[which, :phrase_len])
                caption_emb = model.encode_text(captions[items, :caption_len])
                aux = 0.5 * (info_nce(mix, phrase_emb, scale) + info_nce(expert, caption_emb, scale))
                loss = loss + AUX_LOSS_WEIGHT * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        losses[step] = loss.detach()
        if (step + 1) % LOG_EVERY == 0 or step + 1 == STEPS:
            recent = losses[max(0, step + 1 - LOG_EVERY):step + 1].mean().item()
            print(f"step {step + 1:5d}/{STEPS}  loss {recent:.4f}  "
                  f"temperature {model.temperature().item():.3f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                  f"elapsed {time.time() - t_start:.1f}s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.time() - t_train

    for module, start in zip(backbones, initial):
        wise_ft(module, start, WISE_FT_ALPHA)

    model.eval()
    query_captions = queries.captions[:, :TEXT_LEN]
    image_emb = embed(lambda x, d: model.encode_image(image_batch(x, d)), queries.images, device, autocast)
    caption_emb = embed(lambda x, d: model.encode_text(x.long().to(d)), query_captions, device, autocast,
                        token_lengths(query_captions, pad_id), TEXT_LEN)
    write_outputs(image_emb, caption_emb, queries, {
        "steps": STEPS,
        "seconds": round(time.time() - t_start, 2),
        "setup_seconds": round(setup_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / max(1, STEPS), 4),
        "peak_memory_gb": round(peak_memory_gb(device), 3),
        "final_loss": losses[-20:].mean().item() if STEPS else float("nan"),
        "final_temperature": model.temperature().item(),
        "n_params": n_params,
        "device": str(device),
        "bf16": bf16,
        "threads": run.cpus,
        "seed": seed,
        "text_tower": PRETRAINED_TEXT or "random init",
        "image_tower": PRETRAINED_IMAGE or "random init",
    })
    print(f"done in {time.time() - t_start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
