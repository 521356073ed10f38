#include "generate.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.hpp"
#include "cpu/classifier.hpp"
#include "cpu/encoder.hpp"
#include "cpu/rmsnorm.hpp"
#include "cpu/sampling.hpp"
#include "cuda_plugin.hpp"

namespace lima {

Generator::Generator(Model *m, int mr, int ml) : model(m), max_rows(mr), max_len(ml) {
    const ModelConfig &c = m->cfg;
    LIMA_REQUIRE(mr > 0 && ml > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_generator_create: max_rows (", mr, ") and max_len (", ml,
                 ") must be > 0");
    LIMA_REQUIRE(ml <= c.max_position_embeddings, LIMA_ERR_INVALID_ARGUMENT, "lima_generator_create: max_len ", ml,
                 " exceeds max_position_embeddings (", c.max_position_embeddings, ")");
    if (m->cuda) {
        cuda_run(cuda_api().gen_create, m->cuda, int32_t(mr), int32_t(ml), &cuda);
        return;
    }
    const size_t per = size_t(c.num_layers) * size_t(mr) * size_t(ml) * size_t(c.kv_dim());
    k.assign(per, 0.0f);
    v.assign(per, 0.0f);
}

Generator::~Generator() {
    if (cuda) cuda_api().gen_free(cuda);
}

void Generator::read_logits(float *out, size_t n) const {
    const size_t need = size_t(rows) * size_t(model->cfg.vocab_size);
    LIMA_REQUIRE(rows > 0, LIMA_ERR_STATE, "lima_generator_logits: call lima_generator_start first");
    LIMA_REQUIRE(n == need, LIMA_ERR_SHAPE, "lima_generator_logits: out has ", n, " floats, (rows, V) needs ", need);
    if (cuda)
        cuda_run(cuda_api().gen_logits, cuda, out);
    else
        std::memcpy(out, logits.data(), sizeof(float) * n);
}

namespace {

struct Chunk {
    int row, pos0, n;
    const int32_t *tokens;
};

// Forward of new tokens (a chunk per row, starting at pos0) through the model's one layer body,
// extending the KV cache, and the logits after each chunk's last token into g.logits[row]. Whole
// prompts from position 0 attend within themselves (prefill); later tokens read the cache.
void infer(Generator &g, const std::vector<Chunk> &chunks) {
    Model &m = *g.model;
    const ModelConfig &c = m.cfg;
    const int d = c.hidden_size, F = c.intermediate_size, hd = c.hd(), qd = c.q_dim(), kvd = c.kv_dim();
    long N = 0;
    for (const Chunk &ch : chunks) N += ch.n;
    const size_t n_tok = static_cast<size_t>(N);
    std::vector<int32_t> tok(n_tok), pos(n_tok), row(n_tok);
    std::vector<cpu::Segment> segs;
    bool prefill = true;
    int longest = 0;
    long at = 0;
    for (const Chunk &ch : chunks) {
        prefill = prefill && ch.pos0 == 0;
        longest = std::max(longest, ch.n);
        segs.push_back({at, ch.n});
        for (int i = 0; i < ch.n; ++i, ++at) {
            tok[size_t(at)] = ch.tokens[i];
            pos[size_t(at)] = ch.pos0 + i;
            row[size_t(at)] = ch.row;
        }
    }
    if (m.rope.max_pos < g.max_len || m.rope.half != hd / 2) m.rope.build(hd, std::max(g.max_len, 2048), c);
    Weights w = m.weights();
    // one set of layer buffers, reused by every layer
    std::vector<float> x(n_tok * d), xn1(n_tok * d), rstd1(n_tok), q(n_tok * qd), k(n_tok * kvd), v(n_tok * kvd),
        att(n_tok * qd), lse(prefill ? n_tok * size_t(c.num_heads) : 0), xn2(n_tok * d), rstd2(n_tok), gg(n_tok * F),
        uu(n_tok * F), hh(n_tok * F), tmp(n_tok * size_t(std::max(d, F))), xa(n_tok * size_t(LORA_TARGETS * m.lora_r()));
    const LayerBuffers buf{xn1.data(), rstd1.data(), q.data(), k.data(), v.data(), att.data(), lse.data(),
                           xn2.data(), rstd2.data(), gg.data(), uu.data(), hh.data(), tmp.data(), xa.data()};
    LayerAttention la;
    la.segs = prefill ? &segs : nullptr;
    la.max_seg_len = longest;
    la.row = row.data();
    la.max_len = g.max_len;
    const size_t layer_stride = size_t(g.max_rows) * size_t(g.max_len) * size_t(kvd);
    cpu::encoder_forward(x.data(), w.emb, tok.data(), N, d);
    for (int l = 0; l < c.num_layers; ++l) {
        la.k_cache = g.k.data() + size_t(l) * layer_stride;
        la.v_cache = g.v.data() + size_t(l) * layer_stride;
        materialize(m, l, w.layers[size_t(l)]);
        layer_forward(c, w.layers[size_t(l)], m.rope, buf, x.data(), x.data(), x.data(), pos.data(), N, la, nullptr, 0.0f, l);
    }
    // Final norm and LM head for each chunk's last token only.
    std::vector<float> last(chunks.size() * size_t(d)), lr(chunks.size());
    at = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
        at += chunks[i].n;
        std::memcpy(last.data() + i * size_t(d), x.data() + size_t(at - 1) * d, sizeof(float) * size_t(d));
    }
    cpu::rmsnorm_forward(last.data(), lr.data(), last.data(), w.norm, long(chunks.size()), d, c.rms_norm_eps);
    std::vector<float> out(chunks.size() * size_t(c.vocab_size));
    cpu::classifier_logits(out.data(), last.data(), w.lm_head, long(chunks.size()), d, c.vocab_size);
    for (size_t i = 0; i < chunks.size(); ++i)
        std::memcpy(g.logits.data() + size_t(chunks[i].row) * size_t(c.vocab_size), out.data() + i * size_t(c.vocab_size),
                    sizeof(float) * size_t(c.vocab_size));
}

}  // namespace

void Generator::start(int n, const int32_t *tokens, const int32_t *lengths, const uint64_t *sd) {
    LIMA_REQUIRE(tokens && lengths, LIMA_ERR_INVALID_ARGUMENT, "lima_generator_start: tokens and lengths must not be NULL");
    LIMA_REQUIRE(n > 0 && n <= max_rows, LIMA_ERR_INVALID_ARGUMENT, "lima_generator_start: rows ", n, " must be in [1, ",
                 max_rows, "]");
    std::vector<Chunk> chunks;
    long at = 0;
    for (int r = 0; r < n; ++r) {
        LIMA_REQUIRE(lengths[r] >= 1 && lengths[r] < max_len, LIMA_ERR_INVALID_ARGUMENT, "lima_generator_start: prompt ", r,
                     " has ", lengths[r], " tokens; it must have 1 to max_len - 1 (", max_len - 1, ")");
        for (int i = 0; i < lengths[r]; ++i)
            LIMA_REQUIRE(tokens[at + i] >= 0 && tokens[at + i] < model->cfg.vocab_size, LIMA_ERR_INVALID_ARGUMENT,
                         "generator: token id ", tokens[at + i], " of row ", r, " is outside the vocabulary [0, ",
                         model->cfg.vocab_size, ")");
        chunks.push_back({r, 0, lengths[r], tokens + at});
        at += lengths[r];
    }
    rows = n;
    len.assign(size_t(n), 0);
    toks.assign(size_t(n), {});
    prompt_len.assign(size_t(n), 0);
    seeds.assign(size_t(n), 0);
    if (!cuda) logits.assign(size_t(n) * size_t(model->cfg.vocab_size), 0.0f);
    for (int r = 0; r < n; ++r) {
        toks[size_t(r)].assign(chunks[size_t(r)].tokens, chunks[size_t(r)].tokens + lengths[r]);
        len[size_t(r)] = prompt_len[size_t(r)] = lengths[r];
        seeds[size_t(r)] = sd ? sd[r] : uint64_t(r);
    }
    if (cuda)
        cuda_run(cuda_api().gen_start, cuda, int32_t(n), tokens, lengths, seeds.data());
    else
        infer(*this, chunks);
}

void Generator::step(const lima_sampling &s, const uint8_t *active, int32_t *out) {
    LIMA_REQUIRE(rows > 0, LIMA_ERR_STATE, "lima_generator_step: call lima_generator_start first");
    LIMA_REQUIRE(std::isfinite(s.temperature) && s.top_p > 0 && s.top_p <= 1 && s.top_k >= 0 && s.repetition_penalty > 0,
                 LIMA_ERR_INVALID_ARGUMENT, "lima_generator_step: sampling needs temperature finite, top_p in (0, 1], top_k >= 0, repetition_penalty > 0");
    for (int r = 0; r < rows; ++r)
        LIMA_REQUIRE((active && !active[r]) || len[size_t(r)] < max_len, LIMA_ERR_STATE, "lima_generator_step: row ", r,
                     " is full (max_len ", max_len, ")");
    const int V = model->cfg.vocab_size;
    std::vector<int32_t> next(size_t(rows), -1);
    if (cuda) {
        cuda_run(cuda_api().gen_step, cuda, &s, active, next.data());  // samples and runs the tokens on the device
    } else {
        std::vector<uint8_t> pen(static_cast<size_t>(V));
        for (int r = 0; r < rows; ++r) {
            if (active && !active[r]) continue;
            std::fill(pen.begin(), pen.end(), 0);
            const auto &t = toks[size_t(r)];
            for (size_t i = s.penalty_scope == 1 ? 0 : size_t(prompt_len[size_t(r)]); i < t.size(); ++i) pen[size_t(t[i])] = 1;
            next[size_t(r)] = cpu::sample_token(logits.data() + size_t(r) * size_t(V), V, s, pen.data(), seeds[size_t(r)],
                                                uint64_t(len[size_t(r)]), nullptr);
        }
    }
    std::vector<Chunk> chunks;
    for (int r = 0; r < rows; ++r) {
        if (next[size_t(r)] < 0) continue;
        toks[size_t(r)].push_back(next[size_t(r)]);
        chunks.push_back({r, len[size_t(r)], 1, &toks[size_t(r)].back()});
        len[size_t(r)]++;
    }
    if (!cuda && !chunks.empty()) infer(*this, chunks);
    std::copy(next.begin(), next.end(), out);
}

}  // namespace lima
