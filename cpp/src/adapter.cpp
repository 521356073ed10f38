#include "adapter.hpp"

#include <cblas.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "cuda_plugin.hpp"
#include "safetensors.hpp"

namespace lima {

const char *const kLoraTargetNames[LORA_TARGETS] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

float AdapterConfig::scale() const { return rslora ? alpha / std::sqrt(float(r)) : alpha / float(r); }

namespace {

const char *kPrefix = "base_model.model.";
const char *kEmbRows = "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta";
const char *kHeadRows = "base_model.model.lm_head.token_adapter.trainable_tokens_delta";

// (in, out) of target j's Linear layer.
std::pair<int64_t, int64_t> target_dims(const ModelConfig &c, int j) {
    const int64_t d = c.hidden_size, F = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
    switch (j) {
        case LORA_Q: return {d, qd};
        case LORA_K: case LORA_V: return {d, kvd};
        case LORA_O: return {qd, d};
        case LORA_GATE: case LORA_UP: return {d, F};
        default: return {F, d};
    }
}

std::string module_name(int layer, int j) {
    return cat(kPrefix, "model.layers.", layer, j <= LORA_O ? ".self_attn." : ".mlp.", kLoraTargetNames[j]);
}

void check_config(const ModelConfig &mc, const AdapterConfig &c, const std::string &where) {
    LIMA_REQUIRE(c.r >= 1 && c.r <= 65536, LIMA_ERR_INVALID_ARGUMENT, where, ": r must be in [1, 65536], got ", c.r);
    const int64_t smallest = std::min<int64_t>({mc.hidden_size, mc.kv_dim(), mc.q_dim(), mc.intermediate_size});
    LIMA_REQUIRE(c.r <= smallest, LIMA_ERR_INVALID_ARGUMENT, where, ": r (", c.r, ") exceeds the smallest projection dimension of this model (",
                 smallest, "): a rank that large is full rank");
    LIMA_REQUIRE(std::isfinite(c.alpha) && c.alpha > 0, LIMA_ERR_INVALID_ARGUMENT, where, ": alpha must be > 0, got ", c.alpha);
    LIMA_REQUIRE(std::isfinite(c.dropout) && c.dropout >= 0 && c.dropout < 1, LIMA_ERR_INVALID_ARGUMENT, where,
                 ": dropout must be in [0, 1), got ", c.dropout);
    LIMA_REQUIRE(c.targets != 0 && c.targets < (1u << LORA_TARGETS), LIMA_ERR_INVALID_ARGUMENT, where,
                 ": targets must name at least one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (bits 0-6), got ",
                 c.targets);
    std::vector<int32_t> seen;
    for (int32_t t : c.tokens) {
        LIMA_REQUIRE(t >= 0 && t < mc.vocab_size, LIMA_ERR_INVALID_ARGUMENT, where, ": trainable token id ", t,
                     " is outside the vocabulary [0, ", mc.vocab_size, ")");
        LIMA_REQUIRE(std::find(seen.begin(), seen.end(), t) == seen.end(), LIMA_ERR_INVALID_ARGUMENT, where,
                     ": trainable token id ", t, " is listed twice");
        seen.push_back(t);
    }
}

// A new adapter's layout and zeroed buffer; not yet attached.
std::unique_ptr<Adapter> make_adapter(const Model &m, const AdapterConfig &c) {
    auto a = std::make_unique<Adapter>();
    a->cfg = c;
    a->num_layers = m.cfg.num_layers;
    Layout &l = a->layout;
    // as the Hugging Face Trainer: every adapter tensor is decayed (no bias, no norm here)
    auto add = [&](const std::string &name, int64_t rows, int64_t cols) { l.add(name, rows, cols, true); };
    for (int i = 0; i < m.cfg.num_layers; ++i)
        for (int j = 0; j < LORA_TARGETS; ++j) {
            if (!(c.targets >> j & 1u)) continue;
            const auto [in, out] = target_dims(m.cfg, j);
            add(module_name(i, j) + ".lora_A.weight", c.r, in);
            add(module_name(i, j) + ".lora_B.weight", out, c.r);
        }
    const int64_t nt = int64_t(c.tokens.size()), d = m.cfg.hidden_size;
    if (nt > 0) {
        add(kEmbRows, nt, d);
        a->emb_rows = kEmbRows;
        if (!m.cfg.tie_word_embeddings) {
            add(kHeadRows, nt, d);
            a->head_rows = kHeadRows;
        }
    }
    a->params.assign(l.total, 0.0f);
    a->layers = a->bind(a->params.data());
    return a;
}

// The base's rows at the adapter's tokens, kept to restore them; and the trainable rows from them.
void attach(Model &m, std::unique_ptr<Adapter> a, bool rows_from_model) {
    Weights w = bind(m.cfg, m.layout, m.params.data());
    const int d = m.cfg.hidden_size;
    for (size_t j = 0; j < a->cfg.tokens.size(); ++j) {
        const float *e = w.emb + int64_t(a->cfg.tokens[j]) * d, *h = w.lm_head + int64_t(a->cfg.tokens[j]) * d;
        a->orig_emb.insert(a->orig_emb.end(), e, e + d);
        if (!a->head_rows.empty()) a->orig_head.insert(a->orig_head.end(), h, h + d);
    }
    if (rows_from_model && !a->emb_rows.empty()) {
        std::copy(a->orig_emb.begin(), a->orig_emb.end(), a->params.begin() + long(a->layout.at(a->emb_rows, "adapter").offset));
        if (!a->head_rows.empty())
            std::copy(a->orig_head.begin(), a->orig_head.end(), a->params.begin() + long(a->layout.at(a->head_rows, "adapter").offset));
    }
    m.adapter = std::move(a);
    m.acts = Activations{};
    sync_token_rows(m);
    cuda_adapter_attach(m);
}

void require_attachable(const Model &m, const char *fn) {
    LIMA_REQUIRE(m.trainers == 0, LIMA_ERR_STATE, fn, ": free the model's trainer first (its optimiser state has the model's shape)");
    LIMA_REQUIRE(!m.adapter, LIMA_ERR_STATE, fn, ": the model already has an adapter (merge or remove it first)");
}

}  // namespace

std::vector<LayerLora> Adapter::bind(float *buf) const {
    std::vector<LayerLora> out(static_cast<size_t>(num_layers));
    for (int i = 0; i < num_layers; ++i) {
        LayerLora &ll = out[size_t(i)];
        ll.r = cfg.r;
        ll.scale = cfg.scale();
        ll.dropout = cfg.dropout;
        for (int j = 0; j < LORA_TARGETS; ++j) {
            if (!(cfg.targets >> j & 1u)) continue;
            ll.a[j] = buf + layout.at(module_name(i, j) + ".lora_A.weight", "adapter").offset;
            ll.b[j] = buf + layout.at(module_name(i, j) + ".lora_B.weight", "adapter").offset;
        }
    }
    return out;
}

AdapterGrads Adapter::bind_grads(float *buf) const {
    AdapterGrads g;
    g.layers = bind(buf);
    if (!emb_rows.empty()) {
        g.emb_rows = buf + layout.at(emb_rows, "adapter").offset;
        g.head_rows = head_rows.empty() ? g.emb_rows : buf + layout.at(head_rows, "adapter").offset;
        g.tokens = cfg.tokens.data();
        g.n_tokens = int(cfg.tokens.size());
    }
    return g;
}

void sync_token_rows(Model &m) {
    const Adapter *a = m.adapter.get();
    if (!a || a->emb_rows.empty()) return;
    Weights w = bind(m.cfg, m.layout, m.params.data());
    const int d = m.cfg.hidden_size;
    const float *er = a->params.data() + a->layout.at(a->emb_rows, "adapter").offset;
    const float *hr = a->head_rows.empty() ? nullptr : a->params.data() + a->layout.at(a->head_rows, "adapter").offset;
    for (size_t j = 0; j < a->cfg.tokens.size(); ++j) {
        std::copy(er + j * size_t(d), er + (j + 1) * size_t(d), w.emb + int64_t(a->cfg.tokens[j]) * d);
        if (hr) std::copy(hr + j * size_t(d), hr + (j + 1) * size_t(d), w.lm_head + int64_t(a->cfg.tokens[j]) * d);
    }
}

void add_adapter(Model &m, const AdapterConfig &c, uint64_t seed) {
    require_attachable(m, "lima_model_add_adapter");
    check_config(m.cfg, c, "lima_model_add_adapter");
    auto a = make_adapter(m, c);
    for (size_t t = 0; t < a->layout.params.size(); ++t) {
        const ParamInfo &p = a->layout.params[t];
        if (p.name.find(".lora_A.weight") == std::string::npos) continue;
        // kaiming_uniform_(a = sqrt(5)) on (r, in): bound = sqrt(6 / ((1 + 5) * in)) = 1 / sqrt(in)
        const float bound = 1.0f / std::sqrt(float(p.cols));
        float *w = a->params.data() + p.offset;
        for (int64_t i = 0; i < p.numel(); i += 4) {
            const Philox4 r = philox4x32_10(uint32_t(uint64_t(i) / 4), uint32_t(t), 0x4C6F5241u, 0u, uint32_t(seed),
                                            uint32_t(seed >> 32));
            for (int k = 0; k < 4 && i + k < p.numel(); ++k) w[i + k] = (2.0f * u24(r.v[k]) - 1.0f) * bound;
        }
    }
    attach(m, std::move(a), true);
}

void remove_adapter(Model &m) {
    LIMA_REQUIRE(m.adapter, LIMA_ERR_STATE, "lima_model_remove_adapter: the model has no adapter");
    LIMA_REQUIRE(m.trainers == 0, LIMA_ERR_STATE, "lima_model_remove_adapter: free the model's trainer first");
    cuda_sync_host(m);
    const Adapter &a = *m.adapter;
    Weights w = bind(m.cfg, m.layout, m.params.data());
    const int d = m.cfg.hidden_size;
    for (size_t j = 0; j < a.cfg.tokens.size(); ++j) {
        std::copy(a.orig_emb.begin() + long(j) * d, a.orig_emb.begin() + long(j + 1) * d, w.emb + int64_t(a.cfg.tokens[j]) * d);
        if (!a.head_rows.empty())
            std::copy(a.orig_head.begin() + long(j) * d, a.orig_head.begin() + long(j + 1) * d,
                      w.lm_head + int64_t(a.cfg.tokens[j]) * d);
    }
    m.adapter.reset();
    m.acts = Activations{};
    cuda_adapter_attach(m);  // CUDA: dropped there too, the base's rows pushed back
}

void merge_adapter(Model &m) {
    LIMA_REQUIRE(m.adapter, LIMA_ERR_STATE, "lima_model_merge_adapter: the model has no adapter");
    LIMA_REQUIRE(m.trainers == 0, LIMA_ERR_STATE, "lima_model_merge_adapter: free the model's trainer first");
    LIMA_REQUIRE(!m.nf4(), LIMA_ERR_UNSUPPORTED, "lima_model_merge_adapter: the base is stored in NF4; merge the adapter into"
                 " the unquantised base (load it without quantising), as QLoRA does");
    cuda_sync_host(m);
    const Adapter &a = *m.adapter;
    Weights w = bind(m.cfg, m.layout, m.params.data());
    for (int i = 0; i < m.cfg.num_layers; ++i) {
        const LayerWeights &lw = w.layers[size_t(i)];
        float *W[LORA_TARGETS] = {lw.wq, lw.wk, lw.wv, lw.wo, lw.wg, lw.wu, lw.wd};
        const LayerLora &ll = a.layers[size_t(i)];
        for (int j = 0; j < LORA_TARGETS; ++j) {
            if (!ll.a[j]) continue;
            const auto [in, out] = target_dims(m.cfg, j);
            // W (out, in) += scale * B (out, r) @ A (r, in), as PEFT's merge_and_unload
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(in), ll.r, ll.scale, ll.b[j], ll.r, ll.a[j],
                        int(in), 1.0f, W[j], int(in));
        }
    }
    m.adapter.reset();  // the token rows already hold the trained values
    m.acts = Activations{};
    cuda_adapter_attach(m);  // CUDA: dropped there, the merged weights pushed
}

void load_adapter(Model &m, const std::string &dir) {
    require_attachable(m, "lima_model_load_adapter");
    const std::string cfg_path = dir + "/adapter_config.json", st_path = dir + "/adapter_model.safetensors";
    struct stat st {};
    LIMA_REQUIRE(::stat(dir.c_str(), &st) == 0, LIMA_ERR_IO, "adapter directory ", dir, " does not exist");
    LIMA_REQUIRE(::stat(cfg_path.c_str(), &st) == 0, LIMA_ERR_IO, "adapter ", dir, " has no adapter_config.json");
    LIMA_REQUIRE(::stat(st_path.c_str(), &st) == 0, LIMA_ERR_IO, "adapter ", dir,
                 " has no adapter_model.safetensors (adapter_model.bin, PyTorch pickles, are not read)");
    AdapterConfig c;
    c.targets = 0;
    try {
        const nlohmann::json j = nlohmann::json::parse(read_text_file(cfg_path));
        LIMA_REQUIRE(j.is_object(), LIMA_ERR_FORMAT, cfg_path, ": not a JSON object");
        auto key = [&](const char *k) -> const nlohmann::json * { return j.contains(k) && !j.at(k).is_null() ? &j.at(k) : nullptr; };
        const nlohmann::json *pt = key("peft_type");
        LIMA_REQUIRE(pt && pt->is_string() && pt->get<std::string>() == "LORA", LIMA_ERR_UNSUPPORTED, cfg_path,
                     ": \"peft_type\" must be \"LORA\" (got ", pt ? pt->dump() : "nothing", ")");
        const nlohmann::json *r = key("r"), *alpha = key("lora_alpha"), *drop = key("lora_dropout");
        LIMA_REQUIRE(r && r->is_number_integer(), LIMA_ERR_FORMAT, cfg_path, ": \"r\" must be an integer");
        c.r = r->get<int>();
        c.alpha = alpha ? (alpha->is_number() ? alpha->get<float>() : -1.0f) : 8.0f;
        LIMA_REQUIRE(!alpha || alpha->is_number(), LIMA_ERR_FORMAT, cfg_path, ": \"lora_alpha\" must be a number");
        LIMA_REQUIRE(!drop || drop->is_number(), LIMA_ERR_FORMAT, cfg_path, ": \"lora_dropout\" must be a number");
        c.dropout = drop ? drop->get<float>() : 0.0f;
        auto flag = [&](const char *k) {
            const nlohmann::json *v = key(k);
            LIMA_REQUIRE(!v || v->is_boolean(), LIMA_ERR_FORMAT, cfg_path, ": \"", k, "\" must be true or false");
            return v && v->get<bool>();
        };
        c.rslora = flag("use_rslora");
        for (const char *k : {"use_dora", "fan_in_fan_out", "lora_bias", "use_qalora"})
            LIMA_REQUIRE(!flag(k), LIMA_ERR_UNSUPPORTED, cfg_path, ": \"", k, "\": true is not supported by liblima");
        if (const nlohmann::json *b = key("bias"))
            LIMA_REQUIRE(b->is_string() && b->get<std::string>() == "none", LIMA_ERR_UNSUPPORTED, cfg_path,
                         ": \"bias\" must be \"none\" (got ", b->dump(), ")");
        for (const char *k : {"modules_to_save", "layers_to_transform", "layer_replication", "target_parameters",
                              "alora_invocation_tokens"}) {
            const nlohmann::json *v = key(k);
            LIMA_REQUIRE(!v || (v->is_array() && v->empty()), LIMA_ERR_UNSUPPORTED, cfg_path, ": \"", k, "\" (", v ? v->dump() : "",
                         ") is not supported by liblima");
        }
        for (const char *k : {"rank_pattern", "alpha_pattern"}) {
            const nlohmann::json *v = key(k);
            LIMA_REQUIRE(!v || (v->is_object() && v->empty()), LIMA_ERR_UNSUPPORTED, cfg_path, ": \"", k,
                         "\" (per-module ranks or alphas) is not supported by liblima");
        }
        const nlohmann::json *tm = key("target_modules");
        LIMA_REQUIRE(tm, LIMA_ERR_FORMAT, cfg_path, ": \"target_modules\" is missing");
        if (tm->is_string()) {
            LIMA_REQUIRE(tm->get<std::string>() == "all-linear", LIMA_ERR_UNSUPPORTED, cfg_path, ": \"target_modules\" ", tm->dump(),
                         ": a regular expression is not supported; list module names or use \"all-linear\"");
            c.targets = (1u << LORA_TARGETS) - 1;
        } else {
            LIMA_REQUIRE(tm->is_array(), LIMA_ERR_FORMAT, cfg_path, ": \"target_modules\" must be a list of module names");
            for (const auto &t : *tm) {
                const std::string s = t.is_string() ? t.get<std::string>() : t.dump();
                const auto at = std::find_if(std::begin(kLoraTargetNames), std::end(kLoraTargetNames), [&](const char *n) { return s == n; });
                LIMA_REQUIRE(at != std::end(kLoraTargetNames), LIMA_ERR_UNSUPPORTED, cfg_path, ": target module ", t.dump(),
                             " is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
                c.targets |= 1u << int(at - std::begin(kLoraTargetNames));
            }
        }
        if (const nlohmann::json *tt = key("trainable_token_indices")) {
            auto ids = [&](const nlohmann::json &v, const std::string &what) {
                LIMA_REQUIRE(v.is_array(), LIMA_ERR_FORMAT, cfg_path, ": \"trainable_token_indices\"", what, " must be a list of token ids");
                std::vector<int32_t> out;
                for (const auto &x : v) {
                    LIMA_REQUIRE(x.is_number_integer(), LIMA_ERR_FORMAT, cfg_path, ": \"trainable_token_indices\"", what, ": ", x.dump(),
                                 " is not a token id");
                    out.push_back(x.get<int32_t>());
                }
                return out;
            };
            if (tt->is_array()) {
                c.tokens = ids(*tt, "");
                LIMA_REQUIRE(c.tokens.empty() || m.cfg.tie_word_embeddings, LIMA_ERR_UNSUPPORTED, cfg_path,
                             ": \"trainable_token_indices\" as a list trains the embedding rows only, but this model's LM head is"
                             " not tied to its embedding; liblima needs {\"embed_tokens\": [...], \"lm_head\": [...]} with the same ids");
            } else {
                LIMA_REQUIRE(tt->is_object(), LIMA_ERR_FORMAT, cfg_path, ": \"trainable_token_indices\" must be a list or an object");
                for (const auto &[k, v] : tt->items())
                    LIMA_REQUIRE(k == "embed_tokens" || k == "lm_head", LIMA_ERR_UNSUPPORTED, cfg_path, ": \"trainable_token_indices\" of \"",
                                 k, "\": only embed_tokens and lm_head are supported");
                c.tokens = tt->contains("embed_tokens") ? ids(tt->at("embed_tokens"), ".embed_tokens") : std::vector<int32_t>{};
                const std::vector<int32_t> head = tt->contains("lm_head") ? ids(tt->at("lm_head"), ".lm_head") : std::vector<int32_t>{};
                LIMA_REQUIRE(m.cfg.tie_word_embeddings ? head.empty() || head == c.tokens : head == c.tokens, LIMA_ERR_UNSUPPORTED,
                             cfg_path, ": \"trainable_token_indices\": liblima trains the same token ids in embed_tokens and lm_head");
            }
        }
    } catch (const nlohmann::json::exception &e) {
        fail(LIMA_ERR_FORMAT, cfg_path, ": malformed JSON: ", e.what());
    }
    check_config(m.cfg, c, cfg_path);
    auto a = make_adapter(m, c);
    const StFile f = st_open(st_path);
    std::vector<bool> found(a->layout.params.size(), false);
    for (const auto &[name, e] : f.tensors) {
        std::string n = name;
        for (const char *suffix : {".default.weight", ".default"}) {  // a name saved with the adapter name in it
            const std::string s(suffix);
            if (n.size() > s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0)
                n = n.substr(0, n.size() - s.size()) + (s == ".default.weight" ? ".weight" : "");
        }
        auto it = a->layout.index.find(n);
        LIMA_REQUIRE(it != a->layout.index.end(), LIMA_ERR_SHAPE, st_path, ": tensor ", name,
                     " is not part of the adapter described by ", cfg_path, " for this model (", m.cfg.num_layers, " layers)");
        const ParamInfo &p = a->layout.params[it->second];
        LIMA_REQUIRE(e.shape == p.shape(), LIMA_ERR_SHAPE, st_path, ": tensor ", name, " has shape [", e.shape.size() > 0 ? e.shape[0] : 0,
                     e.shape.size() > 1 ? cat(", ", e.shape[1]) : "", "] but the model and ", cfg_path, " imply [", p.rows, ", ", p.cols, "]");
        float *w = a->params.data() + p.offset;
        st_read_f32(f, e, w, p.numel());
        for (int64_t i = 0; i < p.numel(); ++i)
            LIMA_REQUIRE(std::isfinite(w[i]), LIMA_ERR_FORMAT, st_path, ": tensor ", name, " holds a non-finite value at element ", i);
        found[it->second] = true;
    }
    for (size_t i = 0; i < found.size(); ++i)
        LIMA_REQUIRE(found[i], LIMA_ERR_FORMAT, st_path, ": tensor ", a->layout.params[i].name, " is missing (", cfg_path, " implies it)");
    attach(m, std::move(a), false);
}

void save_adapter(const Model &m, const std::string &dir, const std::string &base_model) {
    LIMA_REQUIRE(m.adapter, LIMA_ERR_STATE, "lima_model_save_adapter: the model has no adapter");
    cuda_sync_host(m);  // CUDA: the trained adapter comes back first
    const Adapter &a = *m.adapter;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail(LIMA_ERR_IO, "cannot create adapter directory ", dir, ": ", ec.message());
    std::vector<StWriteItem> items;
    for (const ParamInfo &p : a.layout.params) items.push_back({p.name, p.shape(), a.params.data() + p.offset});
    st_write(dir + "/adapter_model.safetensors", items, "F32", {{"format", "pt"}});
    nlohmann::ordered_json j;
    nlohmann::json targets = nlohmann::json::array();
    for (int t = 0; t < LORA_TARGETS; ++t)
        if (a.cfg.targets >> t & 1u) targets.push_back(kLoraTargetNames[t]);
    j["peft_type"] = "LORA";
    j["task_type"] = "CAUSAL_LM";
    j["base_model_name_or_path"] = base_model;
    j["r"] = a.cfg.r;
    j["lora_alpha"] = a.cfg.alpha;
    j["lora_dropout"] = a.cfg.dropout;
    j["target_modules"] = targets;
    j["bias"] = "none";
    j["fan_in_fan_out"] = false;
    j["use_rslora"] = a.cfg.rslora;
    j["use_dora"] = false;
    j["init_lora_weights"] = true;
    j["inference_mode"] = true;
    j["modules_to_save"] = nullptr;
    j["layers_to_transform"] = nullptr;
    j["rank_pattern"] = nlohmann::json::object();
    j["alpha_pattern"] = nlohmann::json::object();
    if (a.cfg.tokens.empty())
        j["trainable_token_indices"] = nullptr;
    else if (m.cfg.tie_word_embeddings)
        j["trainable_token_indices"] = a.cfg.tokens;
    else
        j["trainable_token_indices"] = {{"embed_tokens", a.cfg.tokens}, {"lm_head", a.cfg.tokens}};
    j["revision"] = nullptr;
    write_file_atomic(dir + "/adapter_config.json", j.dump(2) + "\n");
}

}  // namespace lima
