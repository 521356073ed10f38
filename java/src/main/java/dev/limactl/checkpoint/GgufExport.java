package dev.limactl.checkpoint;

import dev.limactl.engine.Model;
import dev.limactl.engine.ModelConfig;
import dev.limactl.tokenizer.HfTokenizerFiles;
import dev.limactl.tokenizer.SpModel;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * A limactl checkpoint as one GGUF file (version 3) for llama.cpp and Ollama: llama.cpp's tensor names
 * and layout (q and k rows permuted from Hugging Face's rotary layout to GGML's, as llama.cpp's
 * converter does), the model's hyper-parameters, the vocabulary (a SentencePiece model with scores and
 * token types, or a byte-level BPE tokenizer.json with its merges and pre-tokenizer, as Llama 3 has)
 * with LIMA's EOT as a control token (tokenizer.ggml.eot_token_id), and the chat template.
 * Weights in F16, BF16 or Q8_0 (blocks of 32 int8 with an f16 scale); norm gains stay F32. Written
 * here because no maintained Java library writes GGUF; the format is a fixed header, typed key-value
 * metadata, tensor descriptors and aligned data, and the test reads the file back with the gguf Python
 * package (llama.cpp's own reader). The file appears whole or not at all (written beside it, then renamed).
 */
public final class GgufExport {
    public enum Type {
        F16(1, 1), BF16(30, 32), Q8_0(8, 7);

        final int ggml, fileType;

        Type(int ggml, int fileType) {
            this.ggml = ggml;
            this.fileType = fileType;
        }
    }

    private static final int ALIGN = 32;
    // GGUF metadata value types
    private static final int U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9;

    private GgufExport() {}

    private record Tensor(String hf, String name, long[] dims, int type, long bytes) {}

    /** Writes {@code out} from the checkpoint directory {@code ck}; progress names each tensor written. */
    public static void write(Path ck, Path out, Type type, Consumer<String> progress) {
        int eot = Checkpoint.read(ck).map(Checkpoint::eotTokenId).orElse(-1);
        Vocab vocab = Vocab.of(ck, eot);
        com.fasterxml.jackson.databind.JsonNode scaling;
        try {
            var cfgJson = new com.fasterxml.jackson.databind.ObjectMapper().readTree(ck.resolve("config.json").toFile());
            scaling = cfgJson.path("rope_scaling");
        } catch (IOException e) {
            throw new IllegalArgumentException(ck + ": cannot read config.json: " + e.getMessage());
        }
        Rope rope = Rope.of(scaling, ck);
        Path tmp = out.resolveSibling("." + out.getFileName() + ".tmp-" + ProcessHandle.current().pid());
        try (Model m = Model.load(ck)) {
            ModelConfig c = m.config();
            if (vocab.tokens().size() != c.vocabSize()) {
                throw new IllegalArgumentException(ck + ": the model's vocabulary (" + c.vocabSize() + ") is not the tokenizer's "
                        + vocab.tokens().size() + " tokens (" + vocab.source() + ", with LIMA's EOT when it is a new token)");
            }
            List<Tensor> tensors = tensors(m, c, type);
            if (rope.type().equals("llama3")) tensors.add(0, new Tensor("", "rope_freqs.weight", new long[] {c.headDim() / 2}, 0, 4L * (c.headDim() / 2)));
            try (OutputStream os = new BufferedOutputStream(Files.newOutputStream(tmp), 1 << 20)) {
                Header h = new Header();
                h.bytes(new byte[] {'G', 'G', 'U', 'F'});
                h.u32(3);
                h.u64(tensors.size());
                Map<String, Object[]> kv = metadata(ck, c, vocab, eot, type);
                if (rope.type().equals("linear")) {
                    kv.put("llama.rope.scaling.type", new Object[] {STRING, "linear"});
                    kv.put("llama.rope.scaling.factor", new Object[] {F32, rope.factor()});
                }
                h.u64(kv.size());
                for (var e : kv.entrySet()) {
                    h.string(e.getKey());
                    h.value((int) e.getValue()[0], e.getValue()[1]);
                }
                long offset = 0;
                for (Tensor t : tensors) {
                    h.string(t.name());
                    h.u32(t.dims().length);
                    for (long d : t.dims()) h.u64(d);
                    h.u32(t.type());
                    h.u64(offset);
                    offset = align(offset + t.bytes());
                }
                os.write(h.buf.toByteArray());
                long written = h.buf.size();
                written = pad(os, written);
                int i = 0;
                for (Tensor t : tensors) {
                    byte[] data = t.hf().isEmpty() ? rope.freqFactors(c) : encode(m, c, t);
                    os.write(data);
                    written = pad(os, written + data.length);
                    progress.accept(String.format("%d/%d %s%s", ++i, tensors.size(), t.name(),
                            type == Type.Q8_0 && t.type() == Type.F16.ggml ? " (f16: rows of " + t.dims()[0] + " are not blocks of 32)" : ""));
                }
            }
            Files.move(tmp, out, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + dev.limactl.data.IoErrors.why(e), e);
        } finally {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // the temporary is only ever a partial file beside the output; the output itself is whole or absent
            }
        }
    }

    /**
     * The model's rotary scaling as llama.cpp takes it: linear as metadata (llama.rope.scaling.*), llama3 as
     * the per-frequency factors of a rope_freqs tensor, computed as llama.cpp's converter does.
     */
    record Rope(String type, float factor, float low, float high, int original) {
        static Rope of(com.fasterxml.jackson.databind.JsonNode s, Path ck) {
            if (s == null || s.isMissingNode() || s.isNull()) return new Rope("default", 1, 1, 4, 8192);
            String t = s.path("rope_type").asText(s.path("type").asText("default"));
            if (!List.of("default", "linear", "llama3").contains(t)) {
                throw new IllegalArgumentException(ck + ": rope_type \"" + t + "\" cannot be exported to GGUF (default, linear, llama3)");
            }
            return new Rope(t, (float) s.path("factor").asDouble(1), (float) s.path("low_freq_factor").asDouble(1),
                    (float) s.path("high_freq_factor").asDouble(4), s.path("original_max_position_embeddings").asInt(8192));
        }

        byte[] freqFactors(ModelConfig c) {
            int hd = c.headDim();
            ByteBuffer b = ByteBuffer.allocate(4 * (hd / 2)).order(ByteOrder.LITTLE_ENDIAN);
            double lowWavelen = original / low, highWavelen = original / high;
            for (int i = 0; i < hd / 2; i++) {
                double freq = 1.0 / Math.pow(c.ropeTheta(), 2.0 * i / hd), wavelen = 2 * Math.PI / freq;
                double f;
                if (wavelen < highWavelen) f = 1;
                else if (wavelen > lowWavelen) f = factor;
                else {
                    double smooth = (original / wavelen - low) / (high - low);
                    f = 1 / ((1 - smooth) / factor + smooth);
                }
                b.putFloat((float) f);
            }
            return b.array();
        }
    }

    /**
     * The vocabulary as llama.cpp takes it: a SentencePiece model ("llama": pieces, scores, types), or a
     * byte-level BPE tokenizer.json ("gpt2": tokens, merges, the pre-tokenizer's name; Llama 3's and
     * GPT-2's), with LIMA's EOT as a control token after them when it is a new token.
     */
    record Vocab(String source, String model, String pre, List<String> tokens, List<Float> scores, List<Integer> types, List<String> merges,
                 int unk) {
        static final int NORMAL = 1, CONTROL = 3, USER_DEFINED = 4;
        /** Llama 3's pre-tokenizer split (tokenizer.json's Split pattern); llama.cpp calls it "llama-bpe". */
        static final String LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";

        static Vocab of(Path ck, int eot) {
            Path spFile = ck.resolve("tokenizer.model"), json = ck.resolve("tokenizer.json");
            if (Files.isRegularFile(spFile)) return sentencePiece(spFile, eot);
            if (Files.isRegularFile(json)) return byteLevelBpe(json, eot);
            throw new IllegalArgumentException(ck + " has no tokenizer.model or tokenizer.json: GGUF export needs the vocabulary");
        }

        private static Vocab sentencePiece(Path spFile, int eot) {
            SpModel sp;
            try {
                sp = SpModel.parse(Files.readAllBytes(spFile));
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + spFile + ": " + dev.limactl.data.IoErrors.why(e), e);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(spFile + " is not a SentencePiece model: " + e.getMessage());
            }
            List<String> tokens = new ArrayList<>();
            List<Float> scores = new ArrayList<>();
            List<Integer> types = new ArrayList<>();
            for (SpModel.Piece p : sp.pieces()) {
                tokens.add(p.text());
                scores.add(p.score());
                types.add(p.type());
            }
            if (eot >= sp.pieces().size()) {  // LIMA's own EOT, a control token after the pieces
                tokens.add(HfTokenizerFiles.EOT);
                scores.add(0f);
                types.add(CONTROL);
            }
            return new Vocab("tokenizer.model", "llama", null, tokens, scores, types, null, sp.unkId());
        }

        private static Vocab byteLevelBpe(Path file, int eot) {
            com.fasterxml.jackson.databind.JsonNode root;
            try {
                root = new com.fasterxml.jackson.databind.ObjectMapper().readTree(file.toFile());
            } catch (IOException e) {
                throw new IllegalArgumentException(file + " is not a readable tokenizer.json: " + e.getMessage());
            }
            com.fasterxml.jackson.databind.JsonNode model = root.path("model"), pre = root.path("pre_tokenizer");
            String text = pre.toString();
            boolean byteLevel = text.contains("\"ByteLevel\"") && root.path("decoder").toString().contains("\"ByteLevel\"");
            if (!model.path("type").asText().equals("BPE") || !byteLevel) {
                throw new IllegalArgumentException(file + ": only a byte-level BPE tokenizer.json (GPT-2, Llama 3) exports to GGUF without a"
                        + " tokenizer.model; this one is " + model.path("type").asText("?") + (byteLevel ? "" : " without a ByteLevel pre-tokenizer")
                        + " (export from a checkpoint that has the base's tokenizer.model)");
            }
            String preName = text.contains(LLAMA3_SPLIT) ? "llama-bpe"
                    : pre.path("type").asText().equals("ByteLevel") && pre.path("use_regex").asBoolean(true) ? "gpt-2" : null;
            if (preName == null) {
                throw new IllegalArgumentException(file + ": its pre-tokenizer is neither Llama 3's nor GPT-2's, which llama.cpp would not split"
                        + " the same way; not exported");
            }
            java.util.TreeMap<Integer, String> byId = new java.util.TreeMap<>();
            java.util.Map<Integer, Integer> type = new java.util.HashMap<>();
            model.path("vocab").fields().forEachRemaining(e -> byId.put(e.getValue().asInt(), e.getKey()));
            for (com.fasterxml.jackson.databind.JsonNode t : root.path("added_tokens")) {
                int id = t.path("id").asInt();
                byId.put(id, t.path("content").asText());
                type.put(id, t.path("special").asBoolean(false) ? CONTROL : USER_DEFINED);
            }
            List<String> tokens = new ArrayList<>();
            List<Integer> types = new ArrayList<>();
            for (var e : byId.entrySet()) {
                if (e.getKey() != tokens.size()) {
                    throw new IllegalArgumentException(file + ": token ids are not 0.." + (byId.size() - 1) + " without gaps (id " + tokens.size()
                            + " is missing)");
                }
                tokens.add(e.getValue());
                types.add(type.getOrDefault(e.getKey(), NORMAL));
            }
            if (eot == tokens.size()) {  // LIMA's own EOT when the tokenizer.json does not list it yet
                tokens.add(HfTokenizerFiles.EOT);
                types.add(CONTROL);
            }
            if (eot >= 0 && eot < types.size()) types.set(eot, CONTROL);
            List<String> merges = new ArrayList<>();
            for (com.fasterxml.jackson.databind.JsonNode m : model.path("merges")) {
                merges.add(m.isArray() ? m.get(0).asText() + " " + m.get(1).asText() : m.asText());
            }
            return new Vocab("tokenizer.json", "gpt2", preName, tokens, null, types, merges, -1);
        }
    }

    private static long align(long n) {
        return (n + ALIGN - 1) / ALIGN * ALIGN;
    }

    private static long pad(OutputStream os, long written) throws IOException {
        long to = align(written);
        os.write(new byte[(int) (to - written)]);
        return to;
    }

    /** llama.cpp's names for the Hugging Face tensors, in its order; dims innermost first. */
    private static List<Tensor> tensors(Model m, ModelConfig c, Type type) {
        List<Tensor> out = new ArrayList<>();
        Map<String, Model.TensorInfo> byName = new LinkedHashMap<>();
        for (Model.TensorInfo t : m.tensors()) byName.put(t.name(), t);
        out.add(tensor(byName, "model.embed_tokens.weight", "token_embd.weight", type));
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "model.layers." + l + ".", b = "blk." + l + ".";
            out.add(tensor(byName, p + "input_layernorm.weight", b + "attn_norm.weight", type));
            out.add(tensor(byName, p + "self_attn.q_proj.weight", b + "attn_q.weight", type));
            out.add(tensor(byName, p + "self_attn.k_proj.weight", b + "attn_k.weight", type));
            out.add(tensor(byName, p + "self_attn.v_proj.weight", b + "attn_v.weight", type));
            out.add(tensor(byName, p + "self_attn.o_proj.weight", b + "attn_output.weight", type));
            out.add(tensor(byName, p + "post_attention_layernorm.weight", b + "ffn_norm.weight", type));
            out.add(tensor(byName, p + "mlp.gate_proj.weight", b + "ffn_gate.weight", type));
            out.add(tensor(byName, p + "mlp.up_proj.weight", b + "ffn_up.weight", type));
            out.add(tensor(byName, p + "mlp.down_proj.weight", b + "ffn_down.weight", type));
            // projection biases (attention_bias, mlp_bias), which llama.cpp's llama architecture loads when present
            String[][] biases = {{"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
                {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}};
            for (String[] bias : biases) {
                if (byName.containsKey(p + bias[0] + ".bias")) out.add(tensor(byName, p + bias[0] + ".bias", b + bias[1] + ".bias", type));
            }
        }
        out.add(tensor(byName, "model.norm.weight", "output_norm.weight", type));
        if (!c.tieWordEmbeddings()) out.add(tensor(byName, "lm_head.weight", "output.weight", type));
        return new ArrayList<>(out);
    }

    private static Tensor tensor(Map<String, Model.TensorInfo> byName, String hf, String name, Type type) {
        Model.TensorInfo t = byName.get(hf);
        if (t == null) throw new IllegalArgumentException("the checkpoint has no tensor " + hf);
        long[] s = t.shape();
        if (s.length == 1) return new Tensor(hf, name, new long[] {s[0]}, 0, 4 * s[0]);
        long rows = s[0], cols = s[1];
        // Q8_0 blocks run along rows of 32: a row of another length stays F16, as llama.cpp's converter does
        Type kind = type == Type.Q8_0 && cols % 32 != 0 ? Type.F16 : type;
        long bytes = kind == Type.Q8_0 ? rows * cols / 32 * 34 : rows * cols * 2;
        return new Tensor(hf, name, new long[] {cols, rows}, kind.ggml, bytes);
    }

    private static byte[] encode(Model m, ModelConfig c, Tensor t) {
        float[] w = m.readTensor(t.hf());
        int hd = c.headDim();
        if (t.hf().endsWith("q_proj.weight")) w = permute(w, c.numHeads(), hd, c.hiddenSize());
        if (t.hf().endsWith("k_proj.weight")) w = permute(w, c.numKvHeads(), hd, c.hiddenSize());
        if (t.hf().endsWith("q_proj.bias")) w = permute(w, c.numHeads(), hd, 1);  // a bias follows its rows, as llama.cpp's converter does
        if (t.hf().endsWith("k_proj.bias")) w = permute(w, c.numKvHeads(), hd, 1);
        ByteBuffer b = ByteBuffer.allocate((int) t.bytes()).order(ByteOrder.LITTLE_ENDIAN);
        switch (t.type()) {
            case 0 -> { for (float x : w) b.putFloat(x); }
            case 1 -> { for (float x : w) b.putShort(f16(x)); }
            case 30 -> { for (float x : w) b.putShort(bf16(x)); }
            case 8 -> {
                for (int blk = 0; blk < w.length; blk += 32) {  // Q8_0: d = max|x| / 127 (f16), q = round(x / d)
                    float amax = 0;
                    for (int k = 0; k < 32; k++) amax = Math.max(amax, Math.abs(w[blk + k]));
                    float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
                    b.putShort(f16(d));
                    for (int k = 0; k < 32; k++) {  // C's roundf: halves away from zero
                        float v = w[blk + k] * id;
                        b.put((byte) (v >= 0 ? (int) Math.floor(v + 0.5f) : -(int) Math.floor(-v + 0.5f)));
                    }
                }
            }
            default -> throw new IllegalStateException("ggml type " + t.type());
        }
        return b.array();
    }

    /**
     * Hugging Face's rotary layout (the two halves of each head) to GGML's (interleaved pairs): within
     * each head, row 2i + j of the result is row j * (hd / 2) + i of the input (llama.cpp's permute).
     */
    static float[] permute(float[] w, int heads, int hd, int cols) {
        float[] out = new float[w.length];
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < hd / 2; i++) {
                for (int j = 0; j < 2; j++) {
                    System.arraycopy(w, (h * hd + j * (hd / 2) + i) * cols, out, (h * hd + 2 * i + j) * cols, cols);
                }
            }
        }
        return out;
    }

    /** IEEE half precision, rounded to nearest even (Java 17 has no Float.floatToFloat16). */
    static short f16(float f) {
        int x = Float.floatToRawIntBits(f), sign = (x >>> 16) & 0x8000, exp = (x >>> 23) & 0xff, mant = x & 0x7fffff;
        if (exp == 0xff) return (short) (sign | 0x7c00 | (mant != 0 ? 0x200 : 0));
        int e = exp - 127 + 15;
        if (e >= 0x1f) return (short) (sign | 0x7c00);
        if (e <= 0) {
            if (e < -10) return (short) sign;
            mant |= 0x800000;
            int shift = 14 - e, half = 1 << (shift - 1);
            int r = mant >>> shift, rest = mant & ((1 << shift) - 1);
            if (rest > half || (rest == half && (r & 1) != 0)) r++;
            return (short) (sign | r);
        }
        int r = mant >>> 13, rest = mant & 0x1fff;
        int v = (e << 10) | r;
        if (rest > 0x1000 || (rest == 0x1000 && (r & 1) != 0)) v++;
        return (short) (sign | v);
    }

    static short bf16(float f) {
        int x = Float.floatToRawIntBits(f);
        if ((x & 0x7fffffff) > 0x7f800000) return (short) ((x >>> 16) | 0x40);
        return (short) ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16);
    }

    private static Map<String, Object[]> metadata(Path ck, ModelConfig c, Vocab vocab, int eot, Type type) {
        Map<String, Object[]> kv = new LinkedHashMap<>();
        kv.put("general.architecture", new Object[] {STRING, "llama"});
        kv.put("general.name", new Object[] {STRING, ck.toAbsolutePath().getFileName().toString()});
        kv.put("general.file_type", new Object[] {U32, type.fileType});
        kv.put("general.alignment", new Object[] {U32, ALIGN});
        kv.put("llama.vocab_size", new Object[] {U32, c.vocabSize()});
        kv.put("llama.context_length", new Object[] {U32, c.maxPositionEmbeddings()});
        kv.put("llama.embedding_length", new Object[] {U32, c.hiddenSize()});
        kv.put("llama.block_count", new Object[] {U32, c.numLayers()});
        kv.put("llama.feed_forward_length", new Object[] {U32, c.intermediateSize()});
        kv.put("llama.rope.dimension_count", new Object[] {U32, c.headDim()});
        kv.put("llama.attention.head_count", new Object[] {U32, c.numHeads()});
        kv.put("llama.attention.head_count_kv", new Object[] {U32, c.numKvHeads()});
        kv.put("llama.attention.key_length", new Object[] {U32, c.headDim()});
        kv.put("llama.attention.value_length", new Object[] {U32, c.headDim()});
        kv.put("llama.attention.layer_norm_rms_epsilon", new Object[] {F32, c.rmsNormEps()});
        kv.put("llama.rope.freq_base", new Object[] {F32, c.ropeTheta()});
        kv.put("tokenizer.ggml.model", new Object[] {STRING, vocab.model()});
        if (vocab.pre() != null) kv.put("tokenizer.ggml.pre", new Object[] {STRING, vocab.pre()});
        kv.put("tokenizer.ggml.tokens", new Object[] {ARRAY, new Object[] {STRING, vocab.tokens()}});
        if (vocab.scores() != null) kv.put("tokenizer.ggml.scores", new Object[] {ARRAY, new Object[] {F32, vocab.scores()}});
        kv.put("tokenizer.ggml.token_type", new Object[] {ARRAY, new Object[] {I32, vocab.types()}});
        if (vocab.merges() != null) kv.put("tokenizer.ggml.merges", new Object[] {ARRAY, new Object[] {STRING, vocab.merges()}});
        kv.put("tokenizer.ggml.bos_token_id", new Object[] {U32, c.bosTokenId()});
        kv.put("tokenizer.ggml.eos_token_id", new Object[] {U32, c.eosTokenId()});
        if (vocab.unk() >= 0) kv.put("tokenizer.ggml.unknown_token_id", new Object[] {U32, vocab.unk()});
        kv.put("tokenizer.ggml.padding_token_id", new Object[] {U32, c.eosTokenId()});
        if (eot >= 0) kv.put("tokenizer.ggml.eot_token_id", new Object[] {U32, eot});
        kv.put("tokenizer.ggml.add_bos_token", new Object[] {BOOL, true});
        kv.put("tokenizer.ggml.add_eos_token", new Object[] {BOOL, false});
        kv.put("tokenizer.chat_template", new Object[] {STRING, HfTokenizerFiles.chatTemplate(eot >= 0 && eot < vocab.tokens().size()
                ? vocab.tokens().get(eot) : HfTokenizerFiles.EOT)});
        return kv;
    }

    /** The header and metadata, little-endian, in memory (they are small next to the tensors). */
    private static final class Header {
        final java.io.ByteArrayOutputStream buf = new java.io.ByteArrayOutputStream();

        void bytes(byte[] b) {
            buf.writeBytes(b);
        }

        void u32(long v) {
            bytes(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) v).array());
        }

        void u64(long v) {
            bytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array());
        }

        void string(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            u64(b.length);
            bytes(b);
        }

        @SuppressWarnings("unchecked")
        void value(int type, Object v) {
            u32(type);
            switch (type) {
                case U32, I32 -> u32(((Number) v).longValue());
                case F32 -> u32(Float.floatToRawIntBits(((Number) v).floatValue()));
                case BOOL -> buf.write((Boolean) v ? 1 : 0);
                case STRING -> string((String) v);
                case ARRAY -> {
                    Object[] a = (Object[]) v;
                    int et = (int) a[0];
                    List<Object> items = (List<Object>) a[1];
                    u32(et);
                    u64(items.size());
                    for (Object x : items) {
                        switch (et) {
                            case STRING -> string((String) x);
                            case F32 -> u32(Float.floatToRawIntBits((Float) x));
                            case I32, U32 -> u32(((Number) x).longValue());
                            default -> throw new IllegalStateException("array of type " + et);
                        }
                    }
                }
                default -> throw new IllegalStateException("value type " + type);
            }
        }
    }
}
