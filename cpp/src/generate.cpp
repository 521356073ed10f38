#include "generate.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.hpp"
#include "cpu/attention.hpp"
#include "cpu/classifier.hpp"
#include "cpu/encoder.hpp"
#include "cpu/matmul.hpp"
#include "cpu/rmsnorm.hpp"
#include "cpu/rope.hpp"
#include "cpu/sampling.hpp"
#include "cpu/swiglu.hpp"
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

// Forward of new tokens (a chunk per row, starting at pos0) through the model, extending the KV
// cache, and the logits after each chunk's last token into g.logits[row].
void infer(Generator &g, const std::vector<Chunk> &chunks) {
    Model &m = *g.model;
    const ModelConfig &c = m.cfg;
    const int d = c.hidden_size, F = c.intermediate_size, hd = c.hd(), qd = c.q_dim(), kvd = c.kv_dim();
    const int Hq = c.num_heads, group = c.num_heads / c.num_kv_heads;
    long N = 0;
    for (const Chunk &ch : chunks) N += ch.n;
    const size_t n_tok = static_cast<size_t>(N);
    std::vector<int32_t> tok(n_tok), pos(n_tok), row(n_tok);
    long at = 0;
    for (const Chunk &ch : chunks)
        for (int i = 0; i < ch.n; ++i, ++at) {
            tok[size_t(at)] = ch.tokens[i];
            pos[size_t(at)] = ch.pos0 + i;
            row[size_t(at)] = ch.row;
        }
    if (m.rope.max_pos < g.max_len || m.rope.half != hd / 2) m.rope.build(hd, std::max(g.max_len, 2048), c.rope_theta);
    Weights w = m.weights();
    std::vector<float> x(size_t(N) * d), xn(size_t(N) * d), rstd(n_tok), q(size_t(N) * qd), kk(size_t(N) * kvd),
        vv(size_t(N) * kvd), att(size_t(N) * qd), tmp(size_t(N) * d), gg(size_t(N) * F), uu(size_t(N) * F), hh(size_t(N) * F);
    cpu::encoder_forward(x.data(), w.emb, tok.data(), N, d);
    bool prefill = true;
    int longest = 0;
    std::vector<cpu::Segment> segs;
    long start = 0;
    for (const Chunk &ch : chunks) {
        prefill = prefill && ch.pos0 == 0;
        longest = std::max(longest, ch.n);
        segs.push_back({start, ch.n});
        start += ch.n;
    }
    std::vector<float> lse(prefill ? size_t(N) * size_t(Hq) : 0);
    const float scale = 1.0f / std::sqrt(float(hd));
    const size_t layer_stride = size_t(g.max_rows) * size_t(g.max_len) * size_t(kvd);
    for (int l = 0; l < c.num_layers; ++l) {
        const LayerWeights &lw = w.layers[size_t(l)];
        float *K = g.k.data() + size_t(l) * layer_stride, *Vc = g.v.data() + size_t(l) * layer_stride;
        cpu::rmsnorm_forward(xn.data(), rstd.data(), x.data(), lw.ln1, N, d, c.rms_norm_eps);
        cpu::matmul_forward(q.data(), xn.data(), lw.wq, int(N), d, qd);
        cpu::matmul_forward(kk.data(), xn.data(), lw.wk, int(N), d, kvd);
        cpu::matmul_forward(vv.data(), xn.data(), lw.wv, int(N), d, kvd);
        cpu::rope_forward(q.data(), pos.data(), N, Hq, hd, m.rope);
        cpu::rope_forward(kk.data(), pos.data(), N, c.num_kv_heads, hd, m.rope);
        for (long t = 0; t < N; ++t) {
            const size_t off = (size_t(row[size_t(t)]) * size_t(g.max_len) + size_t(pos[size_t(t)])) * size_t(kvd);
            std::memcpy(K + off, kk.data() + size_t(t) * kvd, sizeof(float) * size_t(kvd));
            std::memcpy(Vc + off, vv.data() + size_t(t) * kvd, sizeof(float) * size_t(kvd));
        }
        if (prefill) {
            // Whole prompts from position 0: causal self-attention within each, the tiled kernel of training.
            cpu::attention_forward(att.data(), lse.data(), q.data(), kk.data(), vv.data(), segs, N, Hq, c.num_kv_heads, hd, longest);
        } else {
    #pragma omp parallel
            {
                std::vector<float> sc(size_t(g.max_len));
    #pragma omp for schedule(dynamic)
                for (long it = 0; it < N * Hq; ++it) {
                    const long t = it / Hq;
                    const int h = int(it % Hq), kh = h / group, p = pos[size_t(t)];
                    const float *qv = q.data() + size_t(t) * qd + size_t(h) * hd;
                    const float *Kr = K + size_t(row[size_t(t)]) * size_t(g.max_len) * size_t(kvd) + size_t(kh) * hd;
                    const float *Vr = Vc + size_t(row[size_t(t)]) * size_t(g.max_len) * size_t(kvd) + size_t(kh) * hd;
                    float mx = -INFINITY;
                    for (int j = 0; j <= p; ++j) {
                        const float *kj = Kr + size_t(j) * kvd;
                        float dot = 0.0f;
                        for (int e = 0; e < hd; ++e) dot += qv[e] * kj[e];
                        sc[size_t(j)] = dot * scale;
                        mx = std::max(mx, sc[size_t(j)]);
                    }
                    float z = 0.0f;
                    for (int j = 0; j <= p; ++j) z += (sc[size_t(j)] = std::exp(sc[size_t(j)] - mx));
                    float *o = att.data() + size_t(t) * qd + size_t(h) * hd;
                    std::fill(o, o + hd, 0.0f);
                    for (int j = 0; j <= p; ++j) {
                        const float pj = sc[size_t(j)] / z;
                        const float *vj = Vr + size_t(j) * kvd;
                        for (int e = 0; e < hd; ++e) o[e] += pj * vj[e];
                    }
                }
            }
        }
        cpu::matmul_forward(tmp.data(), att.data(), lw.wo, int(N), qd, d);
        for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
        cpu::rmsnorm_forward(xn.data(), rstd.data(), x.data(), lw.ln2, N, d, c.rms_norm_eps);
        cpu::matmul_forward(gg.data(), xn.data(), lw.wg, int(N), d, F);
        cpu::matmul_forward(uu.data(), xn.data(), lw.wu, int(N), d, F);
        cpu::swiglu_forward(hh.data(), gg.data(), uu.data(), N * F);
        cpu::matmul_forward(tmp.data(), hh.data(), lw.wd, int(N), F, d);
        for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
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
