"""The Proxy3D VLM: proxy splicing, reference fusion, shared identifier embeddings, 7B preset, API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proxy3d.config import ModelParams
from proxy3d.model import text_tokenizer as tt
from proxy3d.model.build import create_model, save_model_dir
from proxy3d.model.inputs import Example, SceneInput, TextCodec
from proxy3d.model.presets import QWEN_VOCAB_7B, preset_config
from proxy3d.model.proxy_vlm import Proxy3DModel
from proxy3d.model.reference import encode_references, images_to_patches
from proxy3d.train.toy import write_toy_symbols


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Proxy3DModel, object, TextCodec]:
    torch.manual_seed(0)
    tok = tt.build_text_tokenizer(["What is the chair near the table? Answer: chair lamp sofa"] * 20, 400)
    sym = tmp_path_factory.mktemp("symbols")
    write_toy_symbols(sym)
    model = create_model(ModelParams(), tok, sym, feature_dim=8)
    return model, tok, TextCodec(tok, tt.proxy_token_id(tok))


def _scene(k: int, c: int = 8, seed: int = 0) -> SceneInput:
    rng = np.random.default_rng(seed)
    return SceneInput(rng.random((k, 3), dtype=np.float32), np.arange(k) % 3, np.arange(k) % 5,
                      rng.random((k, c), dtype=np.float32))


def test_placeholder_count_mismatch_names_both_counts(tiny) -> None:
    model, _, codec = tiny
    b = codec.collate([Example(_scene(4), [("What is <OBJ001>?", "<OBJ001> chair")])], 32)
    b.scenes[0] = _scene(3)  # 4 placeholders, 3 proxies
    with pytest.raises(ValueError, match=r"4 placeholder tokens.*but 3 proxy rows"):
        model(b.input_ids, b.attention_mask, b.labels, b.scenes)


def test_loss_only_on_answer_tokens(tiny) -> None:
    _, tok, codec = tiny
    ids, labels = codec.example(Example(_scene(2), [("What is <OBJ001>?", "<OBJ001> chair")]), 64)
    answer = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert answer == codec.encode(" <OBJ001> chair") + [tok.eos_token_id]
    assert ids[:2] == [codec.proxy_id] * 2


def test_reference_fusion_adds_the_right_embeddings_to_the_right_proxies(tiny) -> None:
    model, _, _ = tiny
    z = torch.randn(4, model.dim)
    inst = torch.tensor([2, -1, 7, 2])
    cat = torch.tensor([5, 9, -1, 0])
    out = model.refs.fuse(z, inst, cat)
    ide, sem = model.refs.id_embed(), model.refs.sem_embed()
    expected = torch.stack([z[0] + ide[2] + sem[5], z[1] + sem[9], z[2] + ide[7], z[3] + ide[2] + sem[0]])
    torch.testing.assert_close(out, expected)
    assert (ide[2] - ide[7]).abs().max() > 1e-3  # identifiers are distinguishable
    # an object past <OBJ099> (ScanNet scenes can have more) gets no identifier, as -1 does; it had stopped training
    torch.testing.assert_close(model.refs.fuse(z[:1], torch.tensor([120]), torch.tensor([0])),
                               model.refs.fuse(z[:1], torch.tensor([-1]), torch.tensor([0])))


def test_vision_tower_gives_one_reference_embedding_per_image(tiny, tmp_path) -> None:
    from PIL import Image

    model, _, _ = tiny
    imgs = [Image.new("RGB", (28, 28), c) for c in ("white", "black", "red")]
    pixels, grid = images_to_patches(imgs)
    assert pixels.shape == (12, 3 * 2 * 14 * 14) and grid.tolist() == [[1, 2, 2]] * 3
    f = encode_references(model.vlm.model.visual, imgs)
    assert f.shape == (3, model.dim) and torch.isfinite(f).all()
    assert not any(p.requires_grad for p in model.vlm.model.visual.parameters())  # frozen


def test_identifier_text_tokens_share_the_identifier_embedding(tiny) -> None:
    model, tok, codec = tiny
    ids = torch.tensor([codec.encode("is <OBJ005> here")])
    emb = model.embed(ids, [])
    pos = int((ids[0] == tt.object_token_ids(tok)[5]).nonzero()[0, 0])
    torch.testing.assert_close(emb[0, pos], model.refs.id_embed()[5])


def test_proxy_rows_land_at_placeholders_with_pe_and_references(tiny) -> None:
    model, _, codec = tiny
    s = _scene(3)
    b = codec.collate([Example(SceneInput.empty(), [("hi", "yo")]), Example(s, [("hi", "yo")])], 16)
    emb = model.embed(b.input_ids, b.scenes)
    rows = model.scene_rows([s])
    torch.testing.assert_close(emb[1, :3], rows)
    # PE on the projected features first, then the references are added (unrotated: the identifier component of
    # a scene token is exactly the text embedding of its <OBJm>)
    z = model.pe(model.projector(torch.as_tensor(s.features)), torch.as_tensor(s.centers))
    torch.testing.assert_close(rows, model.refs.fuse(z, torch.as_tensor(s.instance), torch.as_tensor(s.category),
                                                     model.semantic_embed()) + model.proxy_marker)
    simple = SceneInput.from_objects([4, 7], [0, 3], np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]], np.float32))
    with torch.no_grad():
        model.null_feature.zero_()
    torch.testing.assert_close(model.scene_rows([simple]),  # height 0, F(x, y) zero-initialised: references only
                               model.refs.id_embed()[[4, 7]] + model.semantic_embed()[[0, 3]] + model.proxy_marker)


def test_category_reference_carries_its_name_text_embedding_and_the_lm_head_is_tied(tiny) -> None:
    model, tok, codec = tiny
    from proxy3d.vocab import categories

    c = categories().index("chair")
    words = model.vlm.get_input_embeddings()(torch.tensor(codec.encode(" chair"))).mean(0)
    torch.testing.assert_close(model.semantic_embed()[c], model.refs.sem_embed()[c] + model.label_text_tie * words)
    assert model.label_text_tie == 1.0
    # tied: naming a category is reading its text vector back through the same matrix
    assert model.vlm.get_output_embeddings().weight.data_ptr() == model.vlm.get_input_embeddings().weight.data_ptr()
    off = Proxy3DModel(model.vlm, model.proxy_token_id, model.obj_token_ids, 0, num_categories=len(categories()))
    torch.testing.assert_close(off.semantic_embed(), off.refs.sem_embed())  # no tie without category tokens


def test_generate_and_bundle_api_roundtrip(tiny, tmp_path) -> None:
    from proxy3d.model.api import load_bundle

    model, tok, codec = tiny
    save_model_dir(model, tok, tmp_path / "ck", {"stage": 1, "model": {"preset": "tiny"}})
    bundle = load_bundle(tmp_path / "ck", "cpu")
    for a, b in zip(model.state_dict().values(), bundle.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    items = [{"scene_id": "s", "question": "What is <OBJ001>?", "situation": None, "options": None},
             {"scene_id": "blind", "question": "Which?", "situation": "I sit.", "options": ["a", "b"]}]
    out = bundle.generate_with_ids(items, {"s": _scene(4), "blind": SceneInput.empty()}, max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(t, str) and isinstance(i, list) for t, i in out)
    with pytest.raises(KeyError, match="no SceneInput for scene 'x'"):
        bundle.generate([{"scene_id": "x", "question": "?"}], {}, 2)
    a, b = _scene(2), _scene(3)
    a.scene_id, b.scene_id = "a", "b"
    two = [{"scene_id": "a", "question": "?"}, {"scene_id": "b", "question": "?"}]
    with pytest.raises(ValueError, match="asks about scene 'a' but its SceneInput is of scene 'b'"):
        bundle.generate(two, [b, a], 2)  # swapped list
    with pytest.raises(ValueError, match="asks about scene 'a' but its SceneInput is of scene 'b'"):
        bundle.generate(two[:1], {"a": b}, 2)  # mapping under the wrong key
    assert len(bundle.generate(two, [a, b], 2)) == 2


def test_scene_input_shapes_must_agree() -> None:
    c = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"need centers \(K, 3\), instance \(K,\)"):
        SceneInput(c, np.array([3]), np.array([7]))  # would broadcast one id over all five proxies
    with pytest.raises(ValueError, match="shapes"):
        SceneInput.from_objects([3], [7], c)
    with pytest.raises(ValueError, match="shapes"):
        SceneInput(c, np.arange(5), np.arange(5), np.zeros((4, 8), np.float32))
    assert len(SceneInput(c, np.arange(5), np.arange(5), np.zeros((5, 8), np.float32))) == 5
    assert len(SceneInput.empty()) == 0


def test_generate_matches_the_training_logits(tiny) -> None:
    model, _, codec = tiny
    b = codec.prompts([_scene(3), SceneInput.empty()], ["What is <OBJ001>?", "Which object is the chair?"])
    with torch.no_grad():
        model.refs.id_offset.add_(torch.randn_like(model.refs.id_offset))  # make identifier rows matter
        first = model.logits(b.input_ids, b.attention_mask, b.scenes)[:, -1].argmax(-1).tolist()
    out = model.generate_ids(b.input_ids, b.attention_mask, b.scenes, 1, eos_token_id=-1, pad_token_id=-1)
    assert [o[0] for o in out] == first


def test_7b_preset_on_meta_device_counts_parameters_and_injects() -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg = preset_config("7b", QWEN_VOCAB_7B, proxy_token_id=151655, eos_token_id=151645)
    with torch.device("meta"):
        vlm = Qwen2_5_VLForConditionalGeneration(cfg)
        model = Proxy3DModel(vlm, 151655, list(range(151665, 151765)), feature_dim=1280)
    n_vlm = sum(p.numel() for p in vlm.parameters())
    assert 8.25e9 < n_vlm < 8.35e9, n_vlm  # Qwen2.5-VL-7B: 8.29B incl. the vision tower
    ids = torch.full((2, 20), 100, dtype=torch.long, device="meta")
    emb = model.embed(ids, [_scene(5, 1280), _scene(7, 1280)])
    assert emb.shape == (2, 20, 3584) and emb.device.type == "meta"


def greedy_by_recomputing(model: Proxy3DModel, b, steps: int) -> list[list[int]]:
    """``steps`` greedy tokens per row of the prompt batch ``b``, each from the logits of the whole sequence so far."""
    ids, att = b.input_ids, b.attention_mask
    with torch.no_grad():
        for _ in range(steps):
            tok = model.logits(ids, att, b.scenes)[:, -1].argmax(-1, keepdim=True)
            ids, att = torch.cat([ids, tok], 1), torch.cat([att, torch.ones_like(tok)], 1)
    return ids[:, b.input_ids.shape[1]:].tolist()


def test_cached_greedy_decoding_equals_recomputing_the_whole_sequence(tiny) -> None:
    """The KV-cache loop (positions continue after the shared proxy position) = full recomputation per token."""
    model, _, codec = tiny
    torch.manual_seed(3)
    with torch.no_grad():
        model.refs.id_offset.add_(torch.randn_like(model.refs.id_offset))
    b = codec.prompts([_scene(3), _scene(5)], ["What is <OBJ001>?", "Which object is the chair near the door?"])
    out = model.generate_ids(b.input_ids, b.attention_mask, b.scenes, 5, eos_token_id=-1, pad_token_id=-1)
    assert out == greedy_by_recomputing(model, b, 5)
    pos = model.position_ids(b.input_ids, b.attention_mask)
    is_proxy = b.input_ids == model.proxy_token_id
    assert pos[is_proxy].eq(0).all() and pos[0, -1] == int((~is_proxy[0] & (b.attention_mask[0] > 0)).sum())


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_identity_qk_init_makes_a_token_attend_to_its_own_vector(preset) -> None:
    """Random-init presets start with W_q ~ W_k ~ scale x identity (GQA: a query head copies its key head)."""
    from proxy3d.model.presets import build_vlm

    vlm = build_vlm(preset, 64, proxy_token_id=3, qk_identity_init=0.5)
    cfg = vlm.config.text_config
    attn = vlm.model.language_model.layers[0].self_attn
    hd = cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    q, k = attn.q_proj.weight, attn.k_proj.weight
    for h in range(cfg.num_attention_heads):
        torch.testing.assert_close(q[h * hd : (h + 1) * hd], k[(h // group) * hd : (h // group + 1) * hd])
    x = torch.randn(8, cfg.hidden_size)  # random vectors: each scores highest against itself
    scores = (x @ q[:hd].T) @ (x @ k[:hd].T).T
    assert (scores.argmax(1) == torch.arange(8)).float().mean() >= 0.75
    plain = build_vlm(preset, 64, proxy_token_id=3).model.language_model.layers[0].self_attn
    assert not torch.equal(plain.q_proj.weight[:hd], plain.k_proj.weight[:hd])


def test_scene_query_bias_points_every_head_at_the_proxy_marker(tiny) -> None:
    model, _, _ = tiny
    cfg = model.vlm.config.text_config
    hd = cfg.hidden_size // cfg.num_attention_heads
    u = model.proxy_marker.detach()
    for layer in model.vlm.model.language_model.layers:
        b = layer.self_attn.q_proj.bias.detach()
        for h in range(cfg.num_attention_heads):
            seg, ub = b[h * hd : (h + 1) * hd], u[h * hd : (h + 1) * hd]
            assert float(seg.norm()) == pytest.approx(ModelParams().scene_query_bias, rel=1e-4)
            assert float(torch.nn.functional.cosine_similarity(seg, ub, dim=0)) == pytest.approx(1.0, abs=1e-5)


def test_batched_greedy_decoding_equals_one_item_at_a_time(tiny) -> None:
    """Left padding (rows of other lengths: 0 to 9 proxies, short and long prompts) changes no row's answer."""
    model, _, codec = tiny
    torch.manual_seed(5)
    with torch.no_grad():
        model.refs.id_offset.add_(torch.randn_like(model.refs.id_offset))
    scenes = [_scene(9, seed=1), SceneInput.empty(), _scene(2, seed=2), _scene(5, seed=3)]
    prompts = ["What is <OBJ001>?", "Situation: I face the chair near the table. Question: Which? Answer:",
               "Which object is the chair?", "What is the chair near the table?"]
    b = codec.prompts(scenes, prompts)
    assert (b.attention_mask == 0).any(1).sum() == 3  # all but the longest row are padded
    together = model.generate_ids(b.input_ids, b.attention_mask, b.scenes, 6, eos_token_id=-1, pad_token_id=-1)
    with torch.no_grad():
        last = model.logits(b.input_ids, b.attention_mask, b.scenes)[:, -1]
    alone = []
    for i, (s, p) in enumerate(zip(scenes, prompts, strict=True)):
        one = codec.prompts([s], [p])
        alone += model.generate_ids(one.input_ids, one.attention_mask, one.scenes, 6, eos_token_id=-1, pad_token_id=-1)
        with torch.no_grad():
            torch.testing.assert_close(model.logits(one.input_ids, one.attention_mask, one.scenes)[0, -1], last[i],
                                       rtol=1e-4, atol=1e-4)
    assert together == alone


def test_generation_never_emits_the_proxy_placeholder(tiny) -> None:
    """A model whose head favours the proxy token (here forced) used to feed it back and crash the whole batch
    with a placeholder/proxy count mismatch."""
    model, _, codec = tiny
    b = codec.prompts([_scene(3), SceneInput.empty()], ["What is <OBJ001>?", "Which object is the chair?"])
    head = model.vlm.get_output_embeddings().weight
    saved = head[model.proxy_token_id].clone()
    try:
        with torch.no_grad():
            head[model.proxy_token_id] = 1e3 * model.vlm.model.language_model.norm.weight.sign()
            hidden = model.vlm.model(inputs_embeds=model.embed(b.input_ids, b.scenes), attention_mask=b.attention_mask,
                                     position_ids=model.position_ids(b.input_ids, b.attention_mask)).last_hidden_state
            assert (torch.nn.functional.linear(hidden[:, -1], model.output_weight()).argmax(-1)
                    == model.proxy_token_id).all()  # unmasked, greedy decoding would pick it
        rows = model.generate_ids(b.input_ids, b.attention_mask, b.scenes, 3, eos_token_id=-1, pad_token_id=-1)
    finally:
        with torch.no_grad():
            head[model.proxy_token_id] = saved
    assert all(len(r) == 3 and model.proxy_token_id not in r for r in rows)


def test_checkpoint_files_get_the_usual_file_mode(tiny, tmp_path) -> None:
    """proxy3d.safetensors was written by safetensors' save_file into the atomic temp file, which recreated it
    with mode 0600: a checkpoint shared with a team was unreadable to everyone else."""
    import os
    import stat

    model, tok, _ = tiny
    old = os.umask(0o022)
    try:
        out = save_model_dir(model, tok, tmp_path / "ck", {"stage": 1})
        (tmp_path / "plain").write_bytes(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((out / "proxy3d.safetensors").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644, oct(mode)


def test_too_few_identifier_images_name_the_setting_that_draws_them(tmp_path) -> None:
    """Symbols drawn with symbols.num_identifiers < 100: rerunning the stage does not help, the setting does."""
    torch.manual_seed(0)
    write_toy_symbols(tmp_path)
    for i in range(50, 100):
        (tmp_path / "identifiers" / f"{i:03d}.png").unlink()
    tok = tt.build_text_tokenizer(["What is the chair? Answer: chair"] * 10, 400)
    with pytest.raises(FileNotFoundError, match=r"050\.png: .*has 50 of the 100 identifier images the model needs "
                                                r"\(one per token <OBJ000>\.\.<OBJ099>\); set "
                                                r"symbols\.num_identifiers: 100"):
        create_model(ModelParams(), tok, tmp_path)
    for i in range(50):
        (tmp_path / "identifiers" / f"{i:03d}.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"000\.png: reference image missing; run `proxy3d symbols`"):
        create_model(ModelParams(), tok, tmp_path)  # no identifiers at all: the stage has not run


def _old_identity_init(vlm, scale: float, ov_scale: float) -> None:
    """identity_qk_init as it was before grouped-query attention got its own output routing."""
    cfg = vlm.config.text_config
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    with torch.no_grad():
        for layer in vlm.model.language_model.layers:
            q, k = layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight
            k.normal_(0.0, 0.02)
            k.add_(scale * torch.eye(k.shape[0], k.shape[1], dtype=k.dtype))
            for h in range(heads):
                g = h // (heads // kv)
                q[h * hd : (h + 1) * hd] = k[g * hd : (g + 1) * hd]
            for w in (layer.self_attn.v_proj.weight, layer.self_attn.o_proj.weight):
                w.normal_(0.0, 0.02)
                w.add_(ov_scale * torch.eye(w.shape[0], w.shape[1], dtype=w.dtype))


def _copy_scores(vlm) -> tuple[float, float]:
    """Layer 0, every head attending to one token x (the heads of a group share their attention at init):
    mean cos(O·V·x, x) over random x, and how often O·V·e_i read back against 300 random embeddings e gives i."""
    cfg = vlm.config.text_config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // heads
    attn = vlm.model.language_model.layers[0].self_attn
    o, v = attn.o_proj.weight.detach(), attn.v_proj.weight.detach()
    ov = sum(o[:, h * hd : (h + 1) * hd] @ v[(h // (heads // kv)) * hd : (h // (heads // kv) + 1) * hd]
             for h in range(heads))
    e = torch.randn(300, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    cos = torch.nn.functional.cosine_similarity(e @ ov.T, e, dim=1).mean()
    read_back = ((e @ ov.T) @ e.T).argmax(1).eq(torch.arange(300)).float().mean()
    return float(cos), float(read_back)


def test_ov_identity_init_makes_copy_heads_under_grouped_query_attention() -> None:
    """small (8 query heads, 2 key/value heads): the output identity once routed value slot g(h) to the dimensions
    of head h, so O·V was no copy (cos 0.08, read back 8%). The tiny preset (4/4 heads, the default) keeps the exact
    init it had. Under GQA O·V has rank kv x head_dim (128 of 512): cos(O·V·x, x) is at most ~0.5 for random x."""
    from proxy3d.model.presets import build_vlm, identity_qk_init

    def built(preset: str, init) -> torch.nn.Module:
        torch.manual_seed(0)
        vlm = build_vlm(preset, 600, 5)
        init(vlm, 0.5, 0.5)
        return vlm

    new_tiny, old_tiny = built("tiny", identity_qk_init), built("tiny", _old_identity_init)
    for (name, a), b in zip(new_tiny.named_parameters(), old_tiny.parameters(), strict=True):
        assert torch.equal(a, b), name
    cos_tiny, read_tiny = _copy_scores(new_tiny)
    assert cos_tiny > 0.6 and read_tiny > 0.95, (cos_tiny, read_tiny)
    cos_old, read_old = _copy_scores(built("small", _old_identity_init))
    cos_new, read_new = _copy_scores(built("small", identity_qk_init))
    assert cos_old < 0.12 and read_old < 0.2, (cos_old, read_old)
    assert cos_new > 0.15 and read_new > 0.7, (cos_new, read_new)
