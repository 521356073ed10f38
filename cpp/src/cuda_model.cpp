// liblima's side of the CUDA backend: a model whose weights live on a CUDA device keeps its host
// fp32 copy (the reference for save, read_tensor and the CPU generator), refreshed from the device
// after training steps, and sends batches and optimiser calls to the plugin (cuda_plugin.hpp).
#include <cstdlib>
#include <cstring>

#include "adapter.hpp"
#include "common.hpp"
#include "cuda_plugin.hpp"
#include "model.hpp"

namespace lima {

void cuda_call(int status, const char *err) {
    if (status != LIMA_OK) fail(status, err);
}

int parse_device(const char *device) {
    if (device == nullptr || std::strcmp(device, "cpu") == 0) return -1;
    if (std::strcmp(device, "cuda") == 0) return 0;
    if (std::strncmp(device, "cuda:", 5) == 0 && device[5] != '\0') {
        char *end = nullptr;
        const long n = std::strtol(device + 5, &end, 10);
        if (*end == '\0' && n >= 0 && n < 1024) return int(n);
    }
    fail(LIMA_ERR_INVALID_ARGUMENT, "unknown device \"", device, "\" (expected \"cpu\", \"cuda\" or \"cuda:N\")");
}

namespace {

// A layout's tensors as the plugin's descriptions list them: offsets, sizes, weight decay.
struct TensorTable {
    std::vector<int64_t> offset, numel;
    std::vector<uint8_t> decay;
    explicit TensorTable(const Layout &l) {
        for (const ParamInfo &p : l.params) {
            offset.push_back(int64_t(p.offset));
            numel.push_back(p.numel());
            decay.push_back(p.decay ? 1 : 0);
        }
    }
    template <typename Desc>
    void fill(Desc &d) const {
        d.num_tensors = int32_t(offset.size());
        d.t_offset = offset.data();
        d.t_numel = numel.data();
        d.t_decay = decay.data();
    }
};

}  // namespace

void cuda_attach(Model &m, int device) {
    const CudaApi &api = cuda_api();
    {
        lima_device_info info[16];
        int32_t n = 0;
        cuda_run(api.devices, info, 16, &n);  // names a missing driver or device
        LIMA_REQUIRE(device < n, LIMA_ERR_INVALID_ARGUMENT, "CUDA device ", device, " does not exist (", n, " found)");
    }
    const ModelConfig &c = m.cfg;
    const Layout &l = m.layout;
    auto off = [&](const std::string &n) { return int64_t(l.params[l.index.at(n)].offset); };
    std::vector<lima_cuda_layer> layers;
    const bool q4 = m.nf4();  // QLoRA: the projections are in m.qweights, not in the layout
    for (int i = 0; i < c.num_layers; ++i) {
        const std::string p = cat("model.layers.", i, ".");
        auto proj = [&](const char *name) { return q4 ? int64_t(-1) : off(p + name); };
        const lima_cuda_layer L{off(p + "input_layernorm.weight"), proj("self_attn.q_proj.weight"), proj("self_attn.o_proj.weight"),
                                off(p + "post_attention_layernorm.weight"), proj("mlp.gate_proj.weight"), proj("mlp.down_proj.weight"),
                                c.attention_bias ? off(p + "self_attn.q_proj.bias") : -1,
                                c.attention_bias ? off(p + "self_attn.o_proj.bias") : -1,
                                c.mlp_bias ? off(p + "mlp.gate_proj.bias") : -1, c.mlp_bias ? off(p + "mlp.down_proj.bias") : -1};
        // the fused products need q|k|v and gate|up adjacent, as make_layout puts them (their biases too)
        LIMA_REQUIRE((q4 || (off(p + "self_attn.k_proj.weight") == L.qkv + int64_t(c.q_dim()) * c.hidden_size &&
                             off(p + "self_attn.v_proj.weight") == L.qkv + int64_t(c.q_dim() + c.kv_dim()) * c.hidden_size &&
                             off(p + "mlp.up_proj.weight") == L.gu + int64_t(c.intermediate_size) * c.hidden_size)) &&
                         (!c.attention_bias || (off(p + "self_attn.k_proj.bias") == L.bqkv + c.q_dim() &&
                                                off(p + "self_attn.v_proj.bias") == L.bqkv + c.q_dim() + c.kv_dim())) &&
                         (!c.mlp_bias || off(p + "mlp.up_proj.bias") == L.bgu + c.intermediate_size),
                     LIMA_ERR_INTERNAL, "CUDA backend: unexpected parameter layout");
        layers.push_back(L);
    }
    std::vector<lima_cuda_nf4> nf4;
    for (const cpu::Nf4Tensor &t : m.qweights)
        nf4.push_back({t.n, t.packed.data(), t.double_quant ? nullptr : t.absmax.data(), t.qabsmax.data(), t.absmax2.data(), t.offset});
    const TensorTable tt(l);
    lima_cuda_model_desc d{};
    d.cfg = c;
    d.cfg.head_dim = c.hd();
    d.device = device;
    d.total = int64_t(l.total);
    d.emb = off("model.embed_tokens.weight");
    d.norm = off("model.norm.weight");
    d.lm_head = c.tie_word_embeddings ? d.emb : off("lm_head.weight");
    d.layers = layers.data();
    tt.fill(d);
    std::vector<int64_t> units;
    for (auto [b, e] : make_units(c, l)) {
        units.push_back(int64_t(b));
        units.push_back(int64_t(e));
    }
    d.units = units.data();
    d.nf4 = q4 ? nf4.data() : nullptr;
    d.nf4_code = cpu::dynamic_code().data();
    void *ctx = nullptr;
    // a hollow model (a ZeRO-3 rank) has no weights to upload: its pieces come with its trainer
    cuda_run(api.create, &d, m.hollow ? static_cast<const float *>(nullptr) : static_cast<const float *>(m.params.data()), &ctx);
    m.cuda = ctx;
    m.device = device;
    m.host_stale = false;
    if (m.adapter) cuda_adapter_attach(m);
}

void cuda_adapter_attach(Model &m) {
    if (!m.cuda) return;
    if (!m.adapter) {  // removed: the plugin drops it, and the host's base rows (restored) go back to the device
        cuda_run(cuda_api().adapter, m.cuda, static_cast<const lima_cuda_adapter_desc *>(nullptr), static_cast<const float *>(nullptr));
        cuda_push(m);
        return;
    }
    const Adapter &a = *m.adapter;
    const float *base = a.params.data();
    std::vector<int64_t> ab;  // each targeted projection's A and B as offsets into the adapter's buffer
    for (const LayerLora &x : a.layers)
        for (int j = 0; j < LORA_TARGETS; ++j) {
            ab.push_back(x.a[j] ? int64_t(x.a[j] - base) : -1);
            ab.push_back(x.b[j] ? int64_t(x.b[j] - base) : -1);
        }
    const TensorTable tt(a.layout);
    lima_cuda_adapter_desc d{};
    d.r = a.cfg.r;
    d.scale = a.cfg.scale();
    d.dropout = a.cfg.dropout;
    d.total = int64_t(a.layout.total);
    d.ab = ab.data();
    d.n_tokens = int32_t(a.cfg.tokens.size());
    d.tokens = a.cfg.tokens.data();
    d.emb_rows = a.emb_rows.empty() ? -1 : int64_t(a.layout.at(a.emb_rows, "adapter").offset);
    d.head_rows = a.head_rows.empty() ? -1 : int64_t(a.layout.at(a.head_rows, "adapter").offset);
    tt.fill(d);
    cuda_run(cuda_api().adapter, m.cuda, static_cast<const lima_cuda_adapter_desc *>(&d), static_cast<const float *>(a.params.data()));
}

void cuda_detach(Model &m) {
    if (!m.cuda) return;
    cuda_api().free(m.cuda);
    m.cuda = nullptr;
}

void cuda_sync_host(const Model &m) {
    if (m.settle) m.settle();
    if (!m.cuda || !m.host_stale) return;
    Model &mm = const_cast<Model &>(m);  // the host copy is a cache of the device weights
    if (mm.adapter) {  // the base is frozen: the adapter changed, and the token rows that follow it
        cuda_run(cuda_api().adapter_params, m.cuda, mm.adapter->params.data(), 0);
        sync_token_rows(mm);
    } else {
        cuda_run(cuda_api().params, m.cuda, mm.params.data(), 0);
    }
    mm.host_stale = false;
}

void cuda_push(Model &m) {
    if (!m.cuda) return;
    cuda_run(cuda_api().params, m.cuda, m.params.data(), 1);
    if (m.adapter) cuda_run(cuda_api().adapter_params, m.cuda, m.adapter->params.data(), 1);
    m.host_stale = false;
}

CudaBatch::CudaBatch(const Batch &b, bool all_rows) {
    for (const cpu::Segment &s : b.segs) {
        seg_start.push_back(int64_t(s.start));
        seg_len.push_back(int32_t(s.len));
    }
    const std::vector<long> &r = all_rows ? b.all_rows : b.pred_rows;
    rows.assign(r.begin(), r.end());
    view.B = b.B;
    view.T = b.T;
    view.tokens = b.tokens.data();
    view.pos = b.pos.data();
    view.num_segs = int32_t(seg_start.size());
    view.seg_start = seg_start.data();
    view.seg_len = seg_len.data();
    view.max_seg_len = b.max_seg_len;
    view.M = int64_t(rows.size());
    view.rows = rows.data();
    view.labels = all_rows ? b.all_labels.data() : b.labels.data();
}

void cuda_token_logprobs(Model &m, const Batch &b, float *out) {
    CudaBatch cb(b, true);
    cuda_run(cuda_api().logprobs, m.cuda, &cb.view, out);
}

}  // namespace lima
