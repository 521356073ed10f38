package dev.limactl.tokenizer;

import ai.djl.huggingface.tokenizers.Encoding;
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/** A Hugging Face {@code tokenizer.json}, through DJL's binding of the HF tokenizers library. */
public final class HfTokenizer implements Tokenizer {
    private final HuggingFaceTokenizer tok;
    private final int vocab;

    private final String bos, eos;

    private HfTokenizer(HuggingFaceTokenizer tok, int vocab, String bos, String eos) {
        this.tok = tok;
        this.vocab = vocab;
        this.bos = bos;
        this.eos = eos;
    }

    /**
     * The BOS and EOS tokens as tokenizer_config.json beside the file names them (a string or
     * {"content": ...}; Llama 3's are <|begin_of_text|> and <|end_of_text|>), else LLaMA's <s> and </s>.
     */
    private static String[] specials(Path file) {
        String[] out = {"<s>", "</s>"};
        Path cfg = file.toAbsolutePath().resolveSibling("tokenizer_config.json");
        if (!Files.isRegularFile(cfg)) return out;
        try {
            JsonNode c = new ObjectMapper().readTree(cfg.toFile());
            String[] keys = {"bos_token", "eos_token"};
            for (int i = 0; i < 2; i++) {
                JsonNode t = c.path(keys[i]);
                if (t.isTextual()) out[i] = t.asText();
                else if (t.path("content").isTextual()) out[i] = t.get("content").asText();
            }
        } catch (IOException e) {
            throw new TokenizerException("cannot read " + cfg + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        return out;
    }

    public static HfTokenizer open(Path file) {
        NativeTokenizers.prepare();
        try {
            String[] sp = specials(file);
            return new HfTokenizer(HuggingFaceTokenizer.newInstance(file, Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false")),
                    vocabSize(file), sp[0], sp[1]);
        } catch (IOException | RuntimeException e) {
            throw new TokenizerException("cannot load tokenizer " + file + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    @Override
    public int[] encode(String text) {
        Encoding e = tok.encode(text, false, false);
        return Arrays.stream(e.getIds()).mapToInt(Math::toIntExact).toArray();
    }

    @Override
    public String decode(int[] ids) {
        return tok.decode(Arrays.stream(ids).asLongStream().toArray(), false);
    }

    @Override
    public List<String> pieces(String text) {
        return Arrays.asList(tok.encode(text, false, false).getTokens());
    }

    @Override
    public String piece(int id) {
        return tok.decode(new long[] {id}, false);
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public int bosId() {
        return idOf(bos);
    }

    @Override
    public int eosId() {
        return idOf(eos);
    }

    /** 1 + the largest id of model.vocab and added_tokens (the HF binding does not expose it). */
    private static int vocabSize(Path file) throws IOException {
        JsonNode root = new ObjectMapper().readTree(file.toFile());
        int max = -1;
        JsonNode v = root.path("model").path("vocab");
        if (v.isObject()) {
            for (JsonNode id : (Iterable<JsonNode>) v::elements) max = Math.max(max, id.asInt());
        }
        for (JsonNode t : root.path("added_tokens")) max = Math.max(max, t.path("id").asInt());
        return max + 1;
    }

    @Override
    public int idOf(String token) {
        long[] ids = tok.encode(token, false, false).getIds();
        return ids.length == 1 ? Math.toIntExact(ids[0]) : -1;
    }

    @Override
    public void close() {
        tok.close();
    }
}
