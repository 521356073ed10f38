#include "config.hpp"

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <tuple>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "common.hpp"

// The C ABI's config defaults live here so the config reader links on its own (the parser fuzz target).
extern "C" void lima_model_config_init(lima_model_config *c) {
    if (!c) return;
    *c = lima_model_config{};
    c->vocab_size = 32000;
    c->hidden_size = 256;
    c->intermediate_size = 688;
    c->num_layers = 4;
    c->num_heads = 4;
    c->num_kv_heads = 4;
    c->head_dim = 0;
    c->max_position_embeddings = 2048;
    c->rms_norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->tie_word_embeddings = 0;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    c->pad_token_id = -1;
    c->initializer_range = 0.02f;
    c->rope_type = LIMA_ROPE_DEFAULT;
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_position_embeddings = 8192;
}

namespace lima {

using json = nlohmann::ordered_json;

void validate(const ModelConfig &c, const std::string &where) {
    auto bad = [&](const char *key, const std::string &why) {
        fail(LIMA_ERR_INVALID_ARGUMENT, where, ": ", key, " ", why);
    };
    if (c.vocab_size <= 0) bad("vocab_size", cat("must be > 0, got ", c.vocab_size));
    if (c.hidden_size <= 0) bad("hidden_size", cat("must be > 0, got ", c.hidden_size));
    if (c.intermediate_size <= 0) bad("intermediate_size", cat("must be > 0, got ", c.intermediate_size));
    if (c.num_layers <= 0) bad("num_hidden_layers", cat("must be > 0, got ", c.num_layers));
    if (c.num_heads <= 0) bad("num_attention_heads", cat("must be > 0, got ", c.num_heads));
    if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
        bad("num_key_value_heads", cat("(", c.num_kv_heads, ") must be > 0 and divide num_attention_heads (",
                                       c.num_heads, ")"));
    if (c.head_dim < 0) bad("head_dim", cat("must be >= 0, got ", c.head_dim));
    if (c.head_dim == 0 && c.hidden_size % c.num_heads != 0)
        bad("hidden_size", cat("(", c.hidden_size, ") must be divisible by num_attention_heads (", c.num_heads,
                               ") when head_dim is not given"));
    if (c.hd() % 2 != 0) bad("head_dim", cat("must be even for rotary embeddings, got ", c.hd()));
    if (c.max_position_embeddings <= 0)
        bad("max_position_embeddings", cat("must be > 0, got ", c.max_position_embeddings));
    if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
        bad("rms_norm_eps", cat("must be a finite value > 0, got ", c.rms_norm_eps));
    if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
        bad("rope_theta", cat("must be a finite value > 0, got ", c.rope_theta));
    if (c.rope_type < LIMA_ROPE_DEFAULT || c.rope_type > LIMA_ROPE_LLAMA3)
        bad("rope_type", cat("must be LIMA_ROPE_DEFAULT, LIMA_ROPE_LINEAR or LIMA_ROPE_LLAMA3, got ", c.rope_type));
    if (c.rope_type != LIMA_ROPE_DEFAULT && !(c.rope_factor >= 1 && std::isfinite(c.rope_factor)))
        bad("rope_scaling.factor", cat("must be a finite value >= 1, got ", c.rope_factor));
    if (c.rope_type == LIMA_ROPE_LLAMA3) {
        if (!(c.rope_low_freq_factor > 0 && c.rope_high_freq_factor > c.rope_low_freq_factor && std::isfinite(c.rope_high_freq_factor)))
            bad("rope_scaling.high_freq_factor", cat("must be finite and above low_freq_factor > 0, got low ", c.rope_low_freq_factor,
                                                     ", high ", c.rope_high_freq_factor));
        if (c.rope_original_max_position_embeddings < 1)
            bad("rope_scaling.original_max_position_embeddings", cat("must be >= 1, got ", c.rope_original_max_position_embeddings));
    }
    if (!(c.initializer_range >= 0) || !std::isfinite(c.initializer_range))
        bad("initializer_range", cat("must be a finite value >= 0, got ", c.initializer_range));
    if (c.tie_word_embeddings != 0 && c.tie_word_embeddings != 1)
        bad("tie_word_embeddings", "must be 0 or 1");
    if ((c.attention_bias != 0 && c.attention_bias != 1) || (c.mlp_bias != 0 && c.mlp_bias != 1))
        bad("attention_bias", "attention_bias and mlp_bias must be 0 or 1");
    // Sizes far beyond any LLaMA are typos or hostile files: refused before anything is allocated.
    auto at_most = [&](const char *key, int64_t v, int64_t limit) {
        if (v > limit) bad(key, cat(v, " is beyond what liblima supports (at most ", limit, ")"));
    };
    at_most("vocab_size", c.vocab_size, int64_t(1) << 24);
    at_most("hidden_size", c.hidden_size, int64_t(1) << 17);
    at_most("intermediate_size", c.intermediate_size, int64_t(1) << 20);
    at_most("num_hidden_layers", c.num_layers, 4096);
    at_most("num_attention_heads", c.num_heads, 4096);
    at_most("max_position_embeddings", c.max_position_embeddings, int64_t(1) << 24);
    for (auto [key, id, none_ok] : {std::tuple<const char *, int32_t, bool>{"bos_token_id", c.bos_token_id, true},
                                    {"eos_token_id", c.eos_token_id, true}, {"pad_token_id", c.pad_token_id, true}})
        if ((id < 0 && !(none_ok && id == -1)) || id >= c.vocab_size)
            bad(key, cat(id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    // The fp32 host copy of the weights must fit this machine's memory.
    const int64_t d = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
    const int64_t per_layer = d * c.q_dim() * 2 + d * c.kv_dim() * 2 + 3 * d * F + 2 * d;
    const int64_t params = V * d * (c.tie_word_embeddings ? 1 : 2) + int64_t(c.num_layers) * per_layer + d;
    const double need = double(params) * 4.0;
    const double have = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
    if (have > 0 && need > have)
        fail(LIMA_ERR_INVALID_ARGUMENT, where, ": the model described (hidden_size ", c.hidden_size, ", num_hidden_layers ",
             c.num_layers, ", vocab_size ", c.vocab_size, ") has ", params, " parameters and needs ", need / 1073741824.0,
             " GiB for its fp32 weights, more than this machine's ", have / 1073741824.0, " GiB of memory");
}

namespace {

int32_t get_int(const json &j, const char *key, const std::string &path, bool required, int32_t dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
        if (required) fail(LIMA_ERR_FORMAT, path, ": missing required key \"", key, "\"");
        return dflt;
    }
    if (!it->is_number_integer()) fail(LIMA_ERR_FORMAT, path, ": key \"", key, "\" must be an integer, got ", it->dump());
    if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT32_MAX))
        fail(LIMA_ERR_FORMAT, path, ": key \"", key, "\" out of range: ", it->dump());
    const auto v = it->get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) fail(LIMA_ERR_FORMAT, path, ": key \"", key, "\" out of range: ", v);
    return int32_t(v);
}

float get_float(const json &j, const char *key, const std::string &path, float dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (!it->is_number()) fail(LIMA_ERR_FORMAT, path, ": key \"", key, "\" must be a number, got ", it->dump());
    const double v = it->get<double>();  // checked before narrowing: a double past float's range has no float value
    if (!(std::fabs(v) <= double(FLT_MAX))) fail(LIMA_ERR_FORMAT, path, ": key \"", key, "\" is out of a float's range: ", it->dump());
    return float(v);
}

// Token ids may be an int, null or (for eos in newer configs) a list; liblima keeps the first.
int32_t get_token_id(const json &j, const char *key, const std::string &path, int32_t dflt) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return dflt;
    if (it->is_array()) {
        if (it->empty()) return dflt;
        const json &first = (*it)[0];
        if (!first.is_number_integer()) fail(LIMA_ERR_FORMAT, path, ": key \"", key, "\" must hold integers");
        if (first.is_number_unsigned() ? first.get<uint64_t>() > uint64_t(INT32_MAX)
                                       : first.get<int64_t>() < INT32_MIN || first.get<int64_t>() > INT32_MAX)
            fail(LIMA_ERR_FORMAT, path, ": key \"", key, "\" out of range: ", first.dump());
        return int32_t(first.get<int64_t>());
    }
    return get_int(j, key, path, false, dflt);
}

// Shortest decimal that reads back as the same float, so 1e-6f is written 1e-06, not 9.99e-07.
double shortest(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; ++prec) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, double(f));
        if (std::strtof(buf, nullptr) == f) break;
    }
    return std::strtod(buf, nullptr);
}

}  // namespace

ModelConfig parse_hf_config(const std::string &text, const std::string &path) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception &e) {
        fail(LIMA_ERR_FORMAT, path, ": not valid JSON: ", e.what());
    }
    if (!j.is_object()) fail(LIMA_ERR_FORMAT, path, ": expected a JSON object");
    if (j.contains("model_type") && j["model_type"] != "llama")
        fail(LIMA_ERR_UNSUPPORTED, path, ": model_type ", j["model_type"].dump(), " is not supported (only \"llama\")");
    if (j.contains("hidden_act") && j["hidden_act"] != "silu")
        fail(LIMA_ERR_UNSUPPORTED, path, ": hidden_act ", j["hidden_act"].dump(), " is not supported (only \"silu\")");
    // Rotary settings: "rope_scaling" (transformers < 5: {"rope_type" or "type", "factor", ...}) or
    // "rope_parameters" (transformers >= 5: {"rope_type", "rope_theta", "factor", ...}).
    const json *rope = nullptr, *scaling = nullptr;
    if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
        rope = &j["rope_parameters"];
        if (!rope->is_object()) fail(LIMA_ERR_FORMAT, path, ": rope_parameters must be an object");
        scaling = rope;
    }
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
        if (!j["rope_scaling"].is_object()) fail(LIMA_ERR_FORMAT, path, ": rope_scaling must be an object");
        scaling = &j["rope_scaling"];
    }

    ModelConfig c;
    lima_model_config_init(&c);
    c.vocab_size = get_int(j, "vocab_size", path, true, 0);
    c.hidden_size = get_int(j, "hidden_size", path, true, 0);
    c.intermediate_size = get_int(j, "intermediate_size", path, true, 0);
    c.num_layers = get_int(j, "num_hidden_layers", path, true, 0);
    c.num_heads = get_int(j, "num_attention_heads", path, true, 0);
    c.num_kv_heads = get_int(j, "num_key_value_heads", path, false, c.num_heads);
    c.head_dim = get_int(j, "head_dim", path, false, 0);
    if (c.head_dim > 0 && c.num_heads > 0 && c.head_dim * c.num_heads == c.hidden_size) c.head_dim = 0;
    c.max_position_embeddings = get_int(j, "max_position_embeddings", path, false, 2048);
    c.rms_norm_eps = get_float(j, "rms_norm_eps", path, 1e-6f);
    c.rope_theta = get_float(j, "rope_theta", path, 10000.0f);
    if (rope) c.rope_theta = get_float(*rope, "rope_theta", path + ": rope_parameters", c.rope_theta);
    if (scaling) {
        const std::string where = path + (scaling == rope ? ": rope_parameters" : ": rope_scaling");
        const json *type = scaling->contains("rope_type") ? &(*scaling)["rope_type"] : scaling->contains("type") ? &(*scaling)["type"] : nullptr;
        const std::string t = type && type->is_string() ? type->get<std::string>() : "default";
        if (type && !type->is_string()) fail(LIMA_ERR_FORMAT, where, ": rope_type must be a string");
        if (t == "linear" || t == "llama3") {
            c.rope_type = t == "linear" ? LIMA_ROPE_LINEAR : LIMA_ROPE_LLAMA3;
            if (!scaling->contains("factor")) fail(LIMA_ERR_FORMAT, where, ": rope_type \"", t, "\" needs \"factor\"");
            c.rope_factor = get_float(*scaling, "factor", where, 1.0f);
            if (t == "llama3") {
                for (const char *k : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
                    if (!scaling->contains(k)) fail(LIMA_ERR_FORMAT, where, ": rope_type \"llama3\" needs \"", k, "\"");
                c.rope_low_freq_factor = get_float(*scaling, "low_freq_factor", where, 1.0f);
                c.rope_high_freq_factor = get_float(*scaling, "high_freq_factor", where, 4.0f);
                c.rope_original_max_position_embeddings = get_int(*scaling, "original_max_position_embeddings", where, true, 8192);
            }
        } else if (t != "default") {
            fail(LIMA_ERR_UNSUPPORTED, where, ": rope_type \"", t, "\" is not supported (default, linear, llama3)");
        }
    }
    c.initializer_range = get_float(j, "initializer_range", path, 0.02f);
    c.bos_token_id = get_token_id(j, "bos_token_id", path, 1);
    c.eos_token_id = get_token_id(j, "eos_token_id", path, 2);
    c.pad_token_id = get_token_id(j, "pad_token_id", path, -1);
    for (auto [k, field] : {std::pair<const char *, int32_t *>{"attention_bias", &c.attention_bias}, {"mlp_bias", &c.mlp_bias}}) {
        auto it = j.find(k);
        if (it == j.end() || it->is_null()) continue;
        if (!it->is_boolean()) fail(LIMA_ERR_FORMAT, path, ": key \"", k, "\" must be true or false");
        *field = it->get<bool>() ? 1 : 0;
    }
    auto tie = j.find("tie_word_embeddings");
    if (tie != j.end() && !tie->is_null()) {
        if (!tie->is_boolean()) fail(LIMA_ERR_FORMAT, path, ": key \"tie_word_embeddings\" must be true or false");
        c.tie_word_embeddings = tie->get<bool>() ? 1 : 0;
    } else {
        c.tie_word_embeddings = 0;
    }
    validate(c, path);
    return c;
}

std::string write_hf_config(const ModelConfig &c, const std::string &base_json, const char *torch_dtype) {
    json j = json::object();
    if (!base_json.empty()) {
        try {
            j = json::parse(base_json);
        } catch (const json::exception &) {
            j = json::object();
        }
    }
    j["architectures"] = json::array({"LlamaForCausalLM"});
    j["model_type"] = "llama";
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.hd();
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["rms_norm_eps"] = shortest(c.rms_norm_eps);
    j["rope_theta"] = shortest(c.rope_theta);
    j["tie_word_embeddings"] = c.tie_word_embeddings != 0;
    j["bos_token_id"] = c.bos_token_id;
    j["eos_token_id"] = c.eos_token_id;
    j["pad_token_id"] = c.pad_token_id >= 0 ? json(c.pad_token_id) : json(nullptr);
    j["hidden_act"] = "silu";
    j["attention_bias"] = c.attention_bias != 0;
    j["mlp_bias"] = c.mlp_bias != 0;
    j["attention_dropout"] = 0.0;
    j["initializer_range"] = shortest(c.initializer_range);
    json params = {{"rope_theta", shortest(c.rope_theta)}, {"rope_type", "default"}};
    json scaling = nullptr;
    if (c.rope_type == LIMA_ROPE_LINEAR || c.rope_type == LIMA_ROPE_LLAMA3) {
        scaling = {{"rope_type", c.rope_type == LIMA_ROPE_LINEAR ? "linear" : "llama3"}, {"factor", shortest(c.rope_factor)}};
        if (c.rope_type == LIMA_ROPE_LLAMA3) {
            scaling["low_freq_factor"] = shortest(c.rope_low_freq_factor);
            scaling["high_freq_factor"] = shortest(c.rope_high_freq_factor);
            scaling["original_max_position_embeddings"] = c.rope_original_max_position_embeddings;
        }
        for (auto &[k, v] : scaling.items()) params[k] = v;
    }
    j["rope_scaling"] = scaling;
    j["rope_parameters"] = params;
    j["torch_dtype"] = torch_dtype;
    if (j.contains("dtype")) j["dtype"] = torch_dtype;
    if (!j.contains("use_cache")) j["use_cache"] = true;
    return j.dump(2) + "\n";
}

}  // namespace lima
