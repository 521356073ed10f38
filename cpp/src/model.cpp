#include "model.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "adapter.hpp"
#include "common.hpp"
#include "cuda_plugin.hpp"
#include "cpu/dropout.hpp"
#include "cpu/encoder.hpp"
#include "cpu/lora.hpp"
#include "cpu/matmul.hpp"
#include "cpu/rmsnorm.hpp"
#include "cpu/swiglu.hpp"
#include "safetensors.hpp"

namespace lima {

const ParamInfo &Layout::at(const std::string &name, const std::string &what) const {
    auto it = index.find(name);
    if (it == index.end()) fail(LIMA_ERR_INVALID_ARGUMENT, what, ": no parameter named ", name);
    return params[it->second];
}

void Layout::add(const std::string &name, int64_t rows, int64_t cols, bool decay) {
    ParamInfo p;
    p.name = name;
    p.rows = rows;
    p.cols = cols;
    p.offset = total;
    p.decay = decay;
    total += size_t(p.numel());
    index[name] = params.size();
    params.push_back(p);
}

Layout make_layout(const ModelConfig &c, bool without_linear) {
    Layout l;
    auto add = [&](const std::string &name, int64_t rows, int64_t cols) {
        if (without_linear && projection_of(name).first >= 0) return;
        l.add(name, rows, cols, cols != 0);
    };
    const int64_t d = c.hidden_size, F = c.intermediate_size;
    add("model.embed_tokens.weight", c.vocab_size, d);
    for (int i = 0; i < c.num_layers; ++i) {
        const std::string p = cat("model.layers.", i, ".");
        add(p + "self_attn.q_proj.weight", c.q_dim(), d);
        add(p + "self_attn.k_proj.weight", c.kv_dim(), d);
        add(p + "self_attn.v_proj.weight", c.kv_dim(), d);
        add(p + "self_attn.o_proj.weight", d, c.q_dim());
        add(p + "mlp.gate_proj.weight", F, d);
        add(p + "mlp.up_proj.weight", F, d);
        add(p + "mlp.down_proj.weight", d, F);
        add(p + "input_layernorm.weight", d, 0);
        add(p + "post_attention_layernorm.weight", d, 0);
        if (c.attention_bias) {
            add(p + "self_attn.q_proj.bias", c.q_dim(), 0);
            add(p + "self_attn.k_proj.bias", c.kv_dim(), 0);
            add(p + "self_attn.v_proj.bias", c.kv_dim(), 0);
            add(p + "self_attn.o_proj.bias", d, 0);
        }
        if (c.mlp_bias) {
            add(p + "mlp.gate_proj.bias", F, 0);
            add(p + "mlp.up_proj.bias", F, 0);
            add(p + "mlp.down_proj.bias", d, 0);
        }
    }
    add("model.norm.weight", d, 0);
    if (!c.tie_word_embeddings) add("lm_head.weight", c.vocab_size, d);
    return l;
}

std::pair<int, int> projection_of(const std::string &name) {
    static const char *const names[LORA_TARGETS] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                                     "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                                                     "mlp.down_proj.weight"};
    const std::string pre = "model.layers.";
    if (name.compare(0, pre.size(), pre) != 0) return {-1, -1};
    size_t dot = name.find('.', pre.size());
    if (dot == std::string::npos || dot == pre.size()) return {-1, -1};
    const std::string num = name.substr(pre.size(), dot - pre.size()), rest = name.substr(dot + 1);
    if (num.find_first_not_of("0123456789") != std::string::npos || num.size() > 6) return {-1, -1};
    for (int j = 0; j < LORA_TARGETS; ++j)
        if (rest == names[j]) return {std::stoi(num), j};
    return {-1, -1};
}

Weights bind(const ModelConfig &c, const Layout &l, float *base, size_t lo, size_t hi) {
    // a tensor the layout does not hold (a projection stored in NF4), or outside [lo, hi), binds to null
    auto at = [&](const std::string &n) -> float * {
        auto it = l.index.find(n);
        if (it == l.index.end()) return nullptr;
        const size_t o = l.params[it->second].offset;
        return o >= lo && o < hi ? base + (o - lo) : nullptr;
    };
    Weights w;
    w.emb = at("model.embed_tokens.weight");
    w.norm = at("model.norm.weight");
    w.lm_head = c.tie_word_embeddings ? w.emb : at("lm_head.weight");
    for (int i = 0; i < c.num_layers; ++i) {
        const std::string p = cat("model.layers.", i, ".");
        w.layers.push_back({at(p + "input_layernorm.weight"), at(p + "self_attn.q_proj.weight"),
                            at(p + "self_attn.k_proj.weight"), at(p + "self_attn.v_proj.weight"),
                            at(p + "self_attn.o_proj.weight"), at(p + "post_attention_layernorm.weight"),
                            at(p + "mlp.gate_proj.weight"), at(p + "mlp.up_proj.weight"),
                            at(p + "mlp.down_proj.weight")});
        static const char *const bias[LORA_TARGETS] = {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                                                       "self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias",
                                                       "mlp.down_proj.bias"};
        for (int j = 0; j < LORA_TARGETS; ++j) w.layers.back().bias[j] = at(p + bias[j]);
    }
    return w;
}

std::vector<std::pair<size_t, size_t>> make_units(const ModelConfig &c, const Layout &l) {
    std::vector<std::pair<size_t, size_t>> u(size_t(c.num_layers) + 2, {SIZE_MAX, 0});
    const std::string pre = "model.layers.";
    for (const ParamInfo &p : l.params) {
        size_t k = size_t(c.num_layers) + 1;
        if (p.name.rfind("model.embed_tokens.", 0) == 0) {
            k = 0;
        } else if (p.name.rfind(pre, 0) == 0) {
            k = 1 + size_t(std::stoul(p.name.substr(pre.size(), p.name.find('.', pre.size()) - pre.size())));
        }
        u[k].first = std::min(u[k].first, p.offset);
        u[k].second = std::max(u[k].second, p.offset + size_t(p.numel()));
    }
    for (size_t k = 0; k < u.size(); ++k)  // the layout is in this order, each unit contiguous
        LIMA_REQUIRE(u[k].first == (k ? u[k - 1].second : 0) && u[k].second > u[k].first, LIMA_ERR_INTERNAL,
                     "ZeRO-3 units: unit ", k, " of the layout is not contiguous");
    LIMA_REQUIRE(u.back().second == l.total, LIMA_ERR_INTERNAL, "ZeRO-3 units do not cover the layout");
    return u;
}

Weights Model::bind_unit(float *buf, int u) const {
    return bind(cfg, layout, buf, units[size_t(u)].first, units[size_t(u)].second);
}

// Rows [old_rows, new_rows) of a (new_rows, d) matrix become the mean of rows [0, old_rows): how a
// grown vocabulary's new rows start (LIMA's EOT).
static void fill_new_rows_with_mean(float *w, int64_t old_rows, int64_t new_rows, int64_t d) {
    std::vector<double> mean(size_t(d), 0.0);
    for (int64_t r = 0; r < old_rows; ++r)
        for (int64_t k = 0; k < d; ++k) mean[size_t(k)] += w[r * d + k];
    for (int64_t r = old_rows; r < new_rows; ++r)
        for (int64_t k = 0; k < d; ++k) w[r * d + k] = float(mean[size_t(k)] / double(old_rows));
}

void Model::require_whole(const char *fn) const {
    LIMA_REQUIRE(!hollow, LIMA_ERR_STATE, fn, ": the model has no weights of its own yet: it is a hollow rank's, filled from rank 0 by"
                 " lima_trainer_set_comm");
    LIMA_REQUIRE(!source, LIMA_ERR_STATE, fn, ": the model's weights are sharded over the ranks of a ZeRO-3 trainer; gather them"
                 " first (lima_trainer_gather_params)");
    LIMA_REQUIRE(params.size() == layout.total, LIMA_ERR_STATE, fn, ": the model's weights were sharded by a ZeRO-3 trainer that"
                 " is gone; load the model again");
}

// ------------------------------------------------------------------------------------ batch

void batch_fill(Batch &b, const int32_t *tokens, const uint8_t *mask, const int32_t *seg) {
    LIMA_REQUIRE(tokens, LIMA_ERR_INVALID_ARGUMENT, "lima_batch_set: tokens is NULL");
    const long N = b.N();
    b.tokens.assign(tokens, tokens + N);
    b.seg.resize(size_t(N));
    b.pos.assign(size_t(N), 0);
    b.segs.clear();
    b.pred_rows.clear();
    b.labels.clear();
    b.all_rows.clear();
    b.all_labels.clear();
    b.max_seg_len = 0;
    for (int r = 0; r < b.B; ++r) {
        std::vector<int32_t> seen;
        for (int t = 0; t < b.T; ++t) {
            const long n = long(r) * b.T + t;
            const int32_t s = seg ? seg[n] : 1;
            LIMA_REQUIRE(s >= 0, LIMA_ERR_INVALID_ARGUMENT, "lima_batch_set: segment id ", s, " at row ", r,
                         ", position ", t, " is negative (0 = padding, > 0 = example)");
            b.seg[size_t(n)] = s;
            const bool cont = t > 0 && b.seg[size_t(n - 1)] == s;
            if (s != 0 && !cont) {
                LIMA_REQUIRE(std::find(seen.begin(), seen.end(), s) == seen.end(), LIMA_ERR_INVALID_ARGUMENT,
                             "lima_batch_set: segment id ", s, " of row ", r, " is not contiguous (seen again at position ", t,
                             ")");
                seen.push_back(s);
                b.segs.push_back({n, 0});
            }
            if (s != 0) {
                b.pos[size_t(n)] = cont ? b.pos[size_t(n - 1)] + 1 : 0;
                b.segs.back().len++;
                b.max_seg_len = std::max(b.max_seg_len, b.segs.back().len);
                if (cont) {
                    b.all_rows.push_back(n - 1);
                    b.all_labels.push_back(tokens[n]);
                }
            }
            if (mask && mask[n]) {
                LIMA_REQUIRE(mask[n] == 1, LIMA_ERR_INVALID_ARGUMENT, "lima_batch_set: loss_mask at row ", r, ", position ",
                             t, " is ", int(mask[n]), " (must be 0 or 1)");
                LIMA_REQUIRE(s != 0, LIMA_ERR_INVALID_ARGUMENT, "lima_batch_set: loss_mask is set on padding at row ", r,
                             ", position ", t);
                if (cont) {
                    b.pred_rows.push_back(n - 1);
                    b.labels.push_back(tokens[n]);
                }
            }
        }
    }
    b.filled = true;
}

// ------------------------------------------------------------------------------------ model

std::vector<ActivationEntry> activation_table(const ModelConfig &c, int lora_r) {
    const int64_t L = c.num_layers, d = c.hidden_size, F = c.intermediate_size;
    return {{"resid", &Activations::resid, (L + 1) * d},
            {"xn1", &Activations::xn1, L * d},
            {"xn2", &Activations::xn2, L * d},
            {"x_mid", &Activations::x_mid, L * d},
            {"rstd1", &Activations::rstd1, L},
            {"rstd2", &Activations::rstd2, L},
            {"rstdf", &Activations::rstdf, 1},
            {"q", &Activations::q, L * c.q_dim()},
            {"att", &Activations::att, L * c.q_dim()},
            {"lse", &Activations::lse, L * c.num_heads},
            {"k", &Activations::k, L * c.kv_dim()},
            {"v", &Activations::v, L * c.kv_dim()},
            {"g", &Activations::g, L * F},
            {"u", &Activations::u, L * F},
            {"h", &Activations::h, L * F},
            {"xf", &Activations::xf, d},
            {"tmp", &Activations::tmp, std::max(d, F)},
            {"lora_xa", &Activations::xa, L * LORA_TARGETS * lora_r}};
}

void Activations::ensure(const ModelConfig &c, long n, int r) {
    if (n <= N && r == lora_r) return;
    N = std::max(n, N);
    lora_r = r;
    for (const ActivationEntry &e : activation_table(c, r)) (this->*e.buf).assign(size_t(e.per_token) * size_t(N), 0.0f);
}

LayerBuffers Activations::layer(const ModelConfig &c, int l, long tokens) {
    const size_t n = size_t(tokens), L = size_t(l), d = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t qd = size_t(c.q_dim()), kvd = size_t(c.kv_dim());
    return {xn1.data() + L * n * d, rstd1.data() + L * n, q.data() + L * n * qd, k.data() + L * n * kvd,
            v.data() + L * n * kvd, att.data() + L * n * qd, lse.data() + L * n * size_t(c.num_heads),
            xn2.data() + L * n * d, rstd2.data() + L * n, g.data() + L * n * F, u.data() + L * n * F,
            h.data() + L * n * F, tmp.data(), lora_r > 0 ? xa.data() + L * n * size_t(LORA_TARGETS * lora_r) : nullptr};
}

int64_t activation_bytes(const ModelConfig &c, int64_t n, int lora_r) {
    int64_t floats = 0;
    for (const ActivationEntry &e : activation_table(c, lora_r)) floats += e.per_token * n;
    return floats * int64_t(sizeof(float));
}

Model::Model(const ModelConfig &c, bool with_weights)
    : cfg(c), layout(make_layout(c)), params(with_weights ? layout.total : 0, 0.0f), hollow(!with_weights) {}

int64_t Model::num_params() const {
    int64_t n = int64_t(layout.total);
    for (const auto &q : qweights) n += q.n;
    return n;
}

int64_t Model::weight_bytes() const {
    int64_t b = int64_t(layout.total) * 4;
    for (const auto &q : qweights) b += q.bytes();
    return b;
}

namespace {

// (in, out) of projection j.
std::pair<int64_t, int64_t> proj_dims(const ModelConfig &c, int j) {
    const int64_t d = c.hidden_size, F = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
    const int64_t dims[LORA_TARGETS][2] = {{d, qd}, {d, kvd}, {d, kvd}, {qd, d}, {d, F}, {d, F}, {F, d}};
    return {dims[j][0], dims[j][1]};
}

}  // namespace

void quantize_nf4(Model &m, bool dq) {
    LIMA_REQUIRE(m.trainers == 0, LIMA_ERR_STATE, "lima_model_quantize_nf4: free the model's trainer first");
    LIMA_REQUIRE(!m.adapter, LIMA_ERR_STATE, "lima_model_quantize_nf4: quantise before adding an adapter");
    LIMA_REQUIRE(!m.nf4(), LIMA_ERR_STATE, "lima_model_quantize_nf4: the model is already quantised");
    // CUDA: quantised from the host's fp32 copy, then the device holds the NF4 projections instead
    cuda_sync_host(m);
    std::vector<cpu::Nf4Tensor> q;
    for (int l = 0; l < m.cfg.num_layers; ++l) {
        const LayerWeights w = bind(m.cfg, m.layout, m.params.data()).layers[size_t(l)];
        const float *W[LORA_TARGETS] = {w.wq, w.wk, w.wv, w.wo, w.wg, w.wu, w.wd};
        for (int j = 0; j < LORA_TARGETS; ++j) {
            const auto [in, out] = proj_dims(m.cfg, j);
            q.push_back(cpu::nf4_quantize(W[j], in * out, dq));
        }
    }
    Layout nl = make_layout(m.cfg, true);
    std::vector<float> np(nl.total);
    for (const ParamInfo &p : nl.params) {
        const ParamInfo &o = m.layout.at(p.name, "lima_model_quantize_nf4");
        std::copy(m.params.begin() + long(o.offset), m.params.begin() + long(o.offset) + p.numel(), np.begin() + long(p.offset));
    }
    const bool on_cuda = m.cuda != nullptr;  // the device's copy has the unquantised layout: replaced
    const int dev = m.device;
    if (on_cuda) cuda_detach(m);
    m.layout = std::move(nl);
    m.params = std::move(np);
    m.qweights = std::move(q);
    m.acts = Activations{};
    if (on_cuda) cuda_attach(m, dev);
}

void materialize(Model &m, int l, LayerWeights &w) {
    if (!m.nf4()) return;
    int64_t total = 0;
    for (int j = 0; j < LORA_TARGETS; ++j) total += m.qweights[size_t(l * LORA_TARGETS + j)].n;
    if (int64_t(m.deq.size()) < total) m.deq.assign(size_t(total), 0.0f);
    float **W[LORA_TARGETS] = {&w.wq, &w.wk, &w.wv, &w.wo, &w.wg, &w.wu, &w.wd};
    int64_t at = 0;
    for (int j = 0; j < LORA_TARGETS; ++j) {
        const cpu::Nf4Tensor &t = m.qweights[size_t(l * LORA_TARGETS + j)];
        cpu::nf4_dequantize(t, m.deq.data() + at, 0, t.n);
        *W[j] = m.deq.data() + at;
        at += t.n;
    }
}

Model::~Model() { cuda_detach(*this); }

Weights Model::weights() {
    require_whole("the model");
    Weights w = bind(cfg, layout, params.data());
    if (adapter)
        for (size_t l = 0; l < w.layers.size(); ++l) w.layers[l].lora = &adapter->layers[l];
    return w;
}

int Model::lora_r() const { return adapter ? adapter->cfg.r : 0; }

void random_init(Model &m, uint64_t seed) {
    for (size_t t = 0; t < m.layout.params.size(); ++t) {
        const ParamInfo &p = m.layout.params[t];
        float *w = m.params.data() + p.offset;
        const long n = long(p.numel());
        if (!p.decay) {
            std::fill(w, w + n, 1.0f);
            continue;
        }
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; ++i) w[i] = init_normal(seed, uint32_t(t), uint64_t(i), m.cfg.initializer_range);
    }
}

void resize_vocab(Model &m, int32_t nv) {
    LIMA_REQUIRE(m.trainers == 0, LIMA_ERR_STATE, "lima_model_resize_vocab: free the model's trainer first (its optimiser state has the old shape)");
    cuda_sync_host(m);
    LIMA_REQUIRE(nv >= m.cfg.vocab_size, LIMA_ERR_INVALID_ARGUMENT, "lima_model_resize_vocab: new vocab size ", nv,
                 " is smaller than the current ", m.cfg.vocab_size, " (shrinking is not supported)");
    if (nv == m.cfg.vocab_size) return;
    ModelConfig nc = m.cfg;
    nc.vocab_size = nv;
    if (m.hollow) {  // the shape only: rank 0's model grows the rows
        m.cfg = nc;
        m.layout = make_layout(nc);
        return;
    }
    Layout nl = make_layout(nc, m.nf4());
    std::vector<float> np(nl.total, 0.0f);
    const int64_t d = m.cfg.hidden_size, ov = m.cfg.vocab_size;
    for (const ParamInfo &p : m.layout.params) {
        const ParamInfo &q = nl.params[nl.index.at(p.name)];
        const float *src = m.params.data() + p.offset;
        float *dst = np.data() + q.offset;
        std::copy(src, src + p.numel(), dst);
        if (q.numel() != p.numel()) fill_new_rows_with_mean(dst, ov, nv, d);  // new rows: the mean of the old ones
    }
    // the device copy has the old shape (and an offloaded context uses the old host buffer): detach first
    const bool on_cuda = m.cuda != nullptr;
    const int dev = m.device;
    if (on_cuda) cuda_detach(m);
    m.cfg = nc;
    m.layout = std::move(nl);
    m.params = std::move(np);
    m.acts = Activations{};
    if (on_cuda) cuda_attach(m, dev);
}

// ------------------------------------------------------------------------------------ checkpoints

namespace {

bool file_exists(const std::string &p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
}

std::string shape_str(const std::vector<int64_t> &s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

}  // namespace

CheckpointReader::CheckpointReader(const std::string &d, const Layout &layout, const ModelConfig &c) : dir(d) {
    const std::string cfg_path = dir + "/config.json";
    // Which file holds each tensor.
    std::map<std::string, std::string> where;
    const std::string index_path = dir + "/model.safetensors.index.json";
    std::vector<std::string> files;
    if (file_exists(index_path)) {
        nlohmann::json idx;
        try {
            idx = nlohmann::json::parse(read_text_file(index_path));
            for (auto &[name, file] : idx.at("weight_map").items()) {
                const std::string f = file.get<std::string>();
                LIMA_REQUIRE(f.find('/') == std::string::npos, LIMA_ERR_FORMAT, index_path, ": shard name ", f,
                             " must be a file name in the checkpoint directory");
                where[name] = dir + "/" + f;
                if (std::find(files.begin(), files.end(), where[name]) == files.end()) files.push_back(where[name]);
            }
        } catch (const nlohmann::json::exception &e) {
            fail(LIMA_ERR_FORMAT, index_path, ": malformed index: ", e.what());
        }
    } else {
        const std::string single = dir + "/model.safetensors";
        LIMA_REQUIRE(file_exists(single), LIMA_ERR_IO, "checkpoint ", dir,
                     " has neither model.safetensors nor model.safetensors.index.json");
        files.push_back(single);
    }
    for (const auto &f : files) {
        opened.emplace(f, st_open(f));
        for (const auto &[name, e] : opened.at(f).tensors) {
            if (where.count(name) && where[name] != f) continue;
            where[name] = f;
        }
    }
    std::map<std::string, bool> used;
    for (const ParamInfo &p : layout.params) {
        auto it = where.find(p.name);
        LIMA_REQUIRE(it != where.end(), LIMA_ERR_FORMAT, "tensor ", p.name, " is missing from ",
                     files.size() == 1 ? files[0] : index_path, " (config.json expects it)");
        const StFile &sf = opened.at(it->second);
        auto e = sf.tensors.find(p.name);
        LIMA_REQUIRE(e != sf.tensors.end(), LIMA_ERR_FORMAT, "tensor ", p.name, " is missing from ", it->second,
                     " (named in ", index_path, ")");
        LIMA_REQUIRE(e->second.shape == p.shape(), LIMA_ERR_SHAPE, "tensor ", p.name, " in ", it->second, " has shape ",
                     shape_str(e->second.shape), " but config.json (", cfg_path, ") implies ", shape_str(p.shape()));
        file_of[p.name] = it->second;
        used[p.name] = true;
    }
    for (const auto &[name, file] : where) {
        if (used.count(name)) continue;
        const bool ignorable = name.find("rotary_emb.inv_freq") != std::string::npos || (c.tie_word_embeddings && name == "lm_head.weight");
        LIMA_REQUIRE(ignorable, LIMA_ERR_SHAPE, "tensor ", name, " in ", file,
                     " is not part of the model described by ", cfg_path, " (config mismatch?)");
    }
}

void CheckpointReader::read(const ParamInfo &p, float *w) const {
    const std::string &file = file_of.at(p.name);
    const StFile &sf = opened.at(file);
    st_read_f32(sf, sf.tensors.at(p.name), w, p.numel());
    long bad_at = -1;
#pragma omp parallel for schedule(static) reduction(max : bad_at)
    for (long i = 0; i < long(p.numel()); ++i)
        if (!std::isfinite(w[i])) bad_at = std::max(bad_at, i);
    LIMA_REQUIRE(bad_at < 0, LIMA_ERR_FORMAT, "tensor ", p.name, " in ", file, " holds a non-finite value (", w[bad_at < 0 ? 0 : bad_at],
                 " at element ", bad_at, "): the checkpoint is damaged");
}

Model *load_model_config(const std::string &dir) {
    const std::string cfg_path = dir + "/config.json";
    LIMA_REQUIRE(file_exists(dir), LIMA_ERR_IO, "checkpoint directory ", dir, " does not exist");
    LIMA_REQUIRE(file_exists(cfg_path), LIMA_ERR_IO, "checkpoint ", dir, " has no config.json");
    const std::string cfg_text = read_text_file(cfg_path);
    auto model = std::make_unique<Model>(parse_hf_config(cfg_text, cfg_path), false);
    model->base_config_json = cfg_text;
    // every tensor's header checked now; the weights are read unit by unit when a trainer shards them
    model->reader = std::make_shared<CheckpointReader>(dir, model->layout, model->cfg);
    model->file_vocab = model->cfg.vocab_size;
    return model.release();
}

Model *load_model(const std::string &dir) {
    const std::string cfg_path = dir + "/config.json";
    LIMA_REQUIRE(file_exists(dir), LIMA_ERR_IO, "checkpoint directory ", dir, " does not exist");
    LIMA_REQUIRE(file_exists(cfg_path), LIMA_ERR_IO, "checkpoint ", dir, " has no config.json");
    const std::string cfg_text = read_text_file(cfg_path);
    auto model = std::make_unique<Model>(parse_hf_config(cfg_text, cfg_path));
    model->base_config_json = cfg_text;
    const CheckpointReader reader(dir, model->layout, model->cfg);
    for (const ParamInfo &p : model->layout.params) reader.read(p, model->params.data() + p.offset);
    return model.release();
}

void read_unit(const Model &m, size_t begin, size_t end, float *out) {
    LIMA_REQUIRE(m.reader, LIMA_ERR_STATE, "the model has neither weights nor a checkpoint to read them from");
    const int64_t d = m.cfg.hidden_size, fv = m.file_vocab, v = m.cfg.vocab_size;
    for (const ParamInfo &p : m.layout.params) {
        if (p.offset < begin || p.offset >= end) continue;
        float *w = out + (p.offset - begin);
        const bool rows = (p.name == "model.embed_tokens.weight" || p.name == "lm_head.weight") && v > fv;
        if (!rows) {
            m.reader->read(p, w);
            continue;
        }
        // the checkpoint's rows, then the rows the vocabulary grew by (LIMA's EOT): their mean, as resize_vocab does
        ParamInfo old = p;
        old.rows = fv;
        m.reader->read(old, w);
        fill_new_rows_with_mean(w, fv, v, d);
    }
}

void save_model(const Model &m, const std::string &dir, int dtype, int64_t max_shard_bytes,
                const std::function<const float *(const ParamInfo &)> *source) {
    LIMA_REQUIRE(!m.nf4(), LIMA_ERR_UNSUPPORTED, "lima_model_save: the model's projections are stored in NF4 (QLoRA);"
                 " save its adapter, and merge the adapter into the unquantised base");
    if (!source) cuda_sync_host(m);
    const char *st_dtype = dtype == LIMA_DTYPE_F32 ? "F32" : dtype == LIMA_DTYPE_BF16 ? "BF16" : dtype == LIMA_DTYPE_F16 ? "F16" : nullptr;
    LIMA_REQUIRE(st_dtype, LIMA_ERR_INVALID_ARGUMENT, "lima_model_save: unknown dtype ", dtype);
    LIMA_REQUIRE(max_shard_bytes >= 0, LIMA_ERR_INVALID_ARGUMENT, "lima_model_save: max_shard_bytes must be >= 0");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);  // like mkdir -p
    if (ec) fail(LIMA_ERR_IO, "cannot create checkpoint directory ", dir, ": ", ec.message());
    const size_t es = st_dtype_size(st_dtype);
    std::vector<std::vector<StWriteItem>> shards(1);
    uint64_t in_shard = 0, total = 0;
    for (const ParamInfo &p : m.layout.params) {
        const uint64_t bytes = uint64_t(p.numel()) * es;
        if (max_shard_bytes > 0 && in_shard > 0 && in_shard + bytes > uint64_t(max_shard_bytes)) {
            shards.emplace_back();
            in_shard = 0;
        }
        if (source)
            shards.back().push_back({p.name, p.shape(), nullptr, [source, &p] { return (*source)(p); }});
        else
            shards.back().push_back({p.name, p.shape(), m.params.data() + p.offset});
        in_shard += bytes;
        total += bytes;
    }
    const std::map<std::string, std::string> meta{{"format", "pt"}};
    const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
    if (shards.size() == 1) {
        st_write(single, shards[0], st_dtype, meta);
        std::remove(index.c_str());
    } else {
        nlohmann::ordered_json idx;
        idx["metadata"] = {{"total_size", total}};
        idx["weight_map"] = nlohmann::ordered_json::object();
        char name[64];
        for (size_t s = 0; s < shards.size(); ++s) {
            std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
            st_write(dir + "/" + name, shards[s], st_dtype, meta);
            for (const auto &it : shards[s]) idx["weight_map"][it.name] = name;
        }
        write_file_atomic(index, idx.dump(2) + "\n");
        std::remove(single.c_str());
    }
    write_file_atomic(dir + "/config.json",
                      write_hf_config(m.cfg, m.base_config_json, dtype == LIMA_DTYPE_F32 ? "float32" : dtype == LIMA_DTYPE_BF16 ? "bfloat16" : "float16"));
}

// ------------------------------------------------------------------------------------ passes

void layer_forward(const ModelConfig &c, const LayerWeights &w, const cpu::RopeTable &rope, const LayerBuffers &a,
                   const float *x, float *x_mid, float *x_out, const int32_t *pos, long N, const LayerAttention &att,
                   const DropoutKey *key, float p, int layer) {
    const int d = c.hidden_size, F = c.intermediate_size, hd = c.hd(), qd = c.q_dim(), kvd = c.kv_dim();
    const int Hq = c.num_heads, Hkv = c.num_kv_heads;
    const long Nd = N * d;
    // A projection y = x @ W^T, plus its adapter's low-rank term when target j has one.
    auto project = [&](int j, float *y, const float *in, const float *W, int n_in, int n_out) {
        cpu::matmul_forward(y, in, W, int(N), n_in, n_out);
        if (w.bias[j]) cpu::bias_forward(y, w.bias[j], N, n_out);
        const LayerLora *lo = w.lora;
        if (lo && lo->a[j])
            cpu::lora_forward(y, a.xa + size_t(j) * size_t(N) * size_t(lo->r), in, lo->a[j], lo->b[j], int(N), n_in, n_out, lo->r,
                              lo->scale, lo->dropout, key, layer, j);
    };
    // attention block
    cpu::rmsnorm_forward(a.xn1, a.rstd1, x, w.ln1, N, d, c.rms_norm_eps);
    project(LORA_Q, a.q, a.xn1, w.wq, d, qd);
    project(LORA_K, a.k, a.xn1, w.wk, d, kvd);
    project(LORA_V, a.v, a.xn1, w.wv, d, kvd);
    cpu::rope_forward(a.q, pos, N, Hq, hd, rope);
    cpu::rope_forward(a.k, pos, N, Hkv, hd, rope);
    if (att.k_cache) cpu::kv_cache_store(att.k_cache, att.v_cache, a.k, a.v, att.row, pos, N, kvd, att.max_len);
    if (att.segs)
        cpu::attention_forward(a.att, a.lse, a.q, a.k, a.v, *att.segs, N, Hq, Hkv, hd, att.max_seg_len);
    else
        cpu::decode_attention(a.att, a.q, att.k_cache, att.v_cache, att.row, pos, N, Hq, Hkv, hd, att.max_len);
    project(LORA_O, a.tmp, a.att, w.wo, qd, d);
    if (x_mid != x) std::memcpy(x_mid, x, size_t(Nd) * sizeof(float));
    cpu::dropout_residual_forward(x_mid, a.tmp, Nd, p, key, layer, 0);
    // MLP block
    cpu::rmsnorm_forward(a.xn2, a.rstd2, x_mid, w.ln2, N, d, c.rms_norm_eps);
    project(LORA_GATE, a.g, a.xn2, w.wg, d, F);
    project(LORA_UP, a.u, a.xn2, w.wu, d, F);
    cpu::swiglu_forward(a.h, a.g, a.u, N * F);
    project(LORA_DOWN, a.tmp, a.h, w.wd, F, d);
    if (x_out != x_mid) std::memcpy(x_out, x_mid, size_t(Nd) * sizeof(float));
    cpu::dropout_residual_forward(x_out, a.tmp, Nd, p, key, layer, 1);
}

void forward(Model &m, const Batch &b, const DropoutKey *key, float p_max) {
    const ModelConfig &c = m.cfg;
    const long N = b.N();
    const int d = c.hidden_size, hd = c.hd();
    for (long n = 0; n < N; ++n)
        LIMA_REQUIRE(b.tokens[size_t(n)] >= 0 && b.tokens[size_t(n)] < c.vocab_size, LIMA_ERR_INVALID_ARGUMENT, "batch: token id ",
                     b.tokens[size_t(n)], " at row ", n / b.T, ", position ", n % b.T, " is outside the vocabulary [0, ",
                     c.vocab_size, ")");
    LIMA_REQUIRE(b.max_seg_len <= c.max_position_embeddings, LIMA_ERR_INVALID_ARGUMENT, "batch: an example of ",
                 b.max_seg_len, " tokens exceeds max_position_embeddings (", c.max_position_embeddings, ")");
    if (m.rope.max_pos < b.max_seg_len || m.rope.half != hd / 2)
        m.rope.build(hd, std::max(b.max_seg_len, std::min(c.max_position_embeddings, 2048)), c);
    Activations &a = m.acts;
    a.ensure(c, N, m.lora_r());
    ParamSource *src = m.source;
    if (!src && m.settle) m.settle();
    const Weights whole = src ? Weights{} : m.weights();
    auto unit = [&](int u) { return src ? m.bind_unit(src->gather(u), u) : whole; };
    auto done = [&](int u) {
        if (src) src->release(u);
    };
    const size_t Nd = size_t(N) * d;
    LayerAttention att;
    att.segs = &b.segs;
    att.max_seg_len = b.max_seg_len;
    cpu::encoder_forward(a.resid.data(), unit(0).emb, b.tokens.data(), N, d);
    done(0);
    for (int l = 0; l < c.num_layers; ++l) {
        float *x = a.resid.data() + size_t(l) * Nd;
        Weights w = unit(1 + l);
        materialize(m, l, w.layers[size_t(l)]);
        layer_forward(c, w.layers[size_t(l)], m.rope, a.layer(c, l, N), x, a.x_mid.data() + size_t(l) * Nd, x + Nd,
                      b.pos.data(), N, att, key, resid_dropout_rate(p_max, l, c.num_layers), l);
        done(1 + l);
    }
    cpu::rmsnorm_forward(a.xf.data(), a.rstdf.data(), a.resid.data() + size_t(c.num_layers) * Nd, unit(c.num_layers + 1).norm, N, d,
                         c.rms_norm_eps);
    done(c.num_layers + 1);
}

void backward(Model &m, const Batch &b, const DropoutKey *key, float p_max, float *dxf, float *grads, const AdapterGrads *ag) {
    const ModelConfig &c = m.cfg;
    const long N = b.N();
    const int d = c.hidden_size, F = c.intermediate_size, hd = c.hd(), qd = c.q_dim(), kvd = c.kv_dim();
    const size_t Nd = size_t(N) * d;
    ParamSource *src = m.source;
    LIMA_REQUIRE(src ? !grads && !ag : bool(grads) != bool(ag), LIMA_ERR_INTERNAL,
                 "backward: gradients for the model, for its adapter or for its source's units, one of them");
    Activations &a = m.acts;
    const Weights whole = src ? Weights{} : m.weights();
    // With an adapter the base is frozen: null gradient pointers (no dW, no norm-gain gradient).
    Weights gw{};
    if (grads)
        gw = bind(c, m.layout, grads);
    else
        gw.layers.assign(size_t(c.num_layers), LayerWeights{nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr});
    // A unit's weights and gradients: the model's own, or its source's (ZeRO-3), released when done.
    auto unit = [&](int u) { return src ? m.bind_unit(src->gather(u), u) : whole; };
    auto unit_grad = [&](int u) { return src ? m.bind_unit(src->grad(u), u) : gw; };
    auto done = [&](int u) {
        if (src) src->release(u);
    };
    // Gradient buffers for one layer, reused down the stack.
    std::vector<float> dres(Nd, 0.0f), dy(Nd), dxn(Nd), dq(size_t(N) * qd), datt(size_t(N) * qd);
    std::vector<float> dk(size_t(N) * kvd), dv(size_t(N) * kvd), dh(size_t(N) * F), dg(size_t(N) * F), du(size_t(N) * F);
    cpu::rmsnorm_backward(dres.data(), unit_grad(c.num_layers + 1).norm, dxf, a.resid.data() + size_t(c.num_layers) * Nd,
                          unit(c.num_layers + 1).norm, a.rstdf.data(), N, d);
    done(c.num_layers + 1);
    for (int l = c.num_layers - 1; l >= 0; --l) {
        Weights w = unit(1 + l);
        const Weights gu = unit_grad(1 + l);
        materialize(m, l, w.layers[size_t(l)]);
        const LayerWeights &lw = w.layers[size_t(l)], &lg = gu.layers[size_t(l)];
        const LayerBuffers s = a.layer(c, l, N);
        const float p = resid_dropout_rate(p_max, l, c.num_layers);
        const float *x = a.resid.data() + size_t(l) * Nd, *xmid = a.x_mid.data() + size_t(l) * Nd;
        const float *xn1 = s.xn1, *xn2 = s.xn2, *q = s.q, *att = s.att, *k = s.k, *v = s.v, *g = s.g, *u = s.u, *h = s.h;
        // A projection's backward: dx (+)= dy @ W, dW += dy^T @ x, and its adapter's part.
        auto project_back = [&](int j, float *dx, float *dW, const float *dyj, const float *in, const float *W, int n_in, int n_out,
                                bool accumulate) {
            cpu::matmul_backward(dx, dW, dyj, in, W, int(N), n_in, n_out, accumulate);
            if (lg.bias[j]) cpu::bias_backward(lg.bias[j], dyj, N, n_out);
            const LayerLora *lo = lw.lora;
            if (!lo || !lo->a[j]) return;
            const LayerLora &lgr = ag->layers[size_t(l)];
            cpu::lora_backward(dx, lgr.a[j], lgr.b[j], dyj, in, s.xa + size_t(j) * size_t(N) * size_t(lo->r), lo->a[j], lo->b[j],
                               int(N), n_in, n_out, lo->r, lo->scale, lo->dropout, key, l, j);
        };
        // MLP block: x_next = x_mid + dropout(down(swiglu(gate(xn2), up(xn2))))
        cpu::dropout_residual_backward(dy.data(), dres.data(), long(Nd), p, key, l, 1);
        project_back(LORA_DOWN, dh.data(), lg.wd, dy.data(), h, lw.wd, F, d, false);
        cpu::swiglu_backward(dg.data(), du.data(), dh.data(), g, u, N * F);
        project_back(LORA_GATE, dxn.data(), lg.wg, dg.data(), xn2, lw.wg, d, F, false);
        project_back(LORA_UP, dxn.data(), lg.wu, du.data(), xn2, lw.wu, d, F, true);
        cpu::rmsnorm_backward(dres.data(), lg.ln2, dxn.data(), xmid, lw.ln2, s.rstd2, N, d);
        // Attention block: x_mid = x + dropout(o_proj(attention(rope(q), rope(k), v)))
        cpu::dropout_residual_backward(dy.data(), dres.data(), long(Nd), p, key, l, 0);
        project_back(LORA_O, datt.data(), lg.wo, dy.data(), att, lw.wo, qd, d, false);
        cpu::attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), q, k, v, att,
                                s.lse, b.segs, N, c.num_heads, c.num_kv_heads, hd,
                                b.max_seg_len);
        cpu::rope_backward(dq.data(), b.pos.data(), N, c.num_heads, hd, m.rope);
        cpu::rope_backward(dk.data(), b.pos.data(), N, c.num_kv_heads, hd, m.rope);
        project_back(LORA_Q, dxn.data(), lg.wq, dq.data(), xn1, lw.wq, d, qd, false);
        project_back(LORA_K, dxn.data(), lg.wk, dk.data(), xn1, lw.wk, d, kvd, true);
        project_back(LORA_V, dxn.data(), lg.wv, dv.data(), xn1, lw.wv, d, kvd, true);
        cpu::rmsnorm_backward(dres.data(), lg.ln1, dxn.data(), x, lw.ln1, s.rstd1, N, d);
        done(1 + l);
    }
    if (grads || src) {
        cpu::encoder_backward(unit_grad(0).emb, dres.data(), b.tokens.data(), N, d);
        done(0);
    } else if (ag->n_tokens > 0) {
        cpu::encoder_rows_backward(ag->emb_rows, ag->tokens, ag->n_tokens, dres.data(), b.tokens.data(), N, d);
    }
}

}  // namespace lima
