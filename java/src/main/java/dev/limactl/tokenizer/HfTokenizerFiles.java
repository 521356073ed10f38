package dev.limactl.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * The Hugging Face tokenizer and generation files of a limactl checkpoint, so that {@code AutoTokenizer},
 * {@code apply_chat_template} and {@code generate} (and servers that read these files, as vLLM does)
 * see what limactl sees:
 * <ul>
 *   <li>{@code tokenizer.json}: the base's own, or, for a SentencePiece BPE base, the fast tokenizer
 *       transformers' converter builds (BPE with byte fallback, merges ordered by piece score, the
 *       model's normalizer: its precompiled map, whitespace handling and dummy prefix), with LIMA's EOT
 *       added as a special token at its id and BOS added by the post-processor;</li>
 *   <li>{@code tokenizer_config.json} with the chat template of LIMA's format;</li>
 *   <li>{@code generation_config.json}: EOS and EOT both end generation, LIMA's sampling.</li>
 * </ul>
 */
public final class HfTokenizerFiles {
    /** LIMA's end-of-turn token as text, in tokenizer.json and the chat template. */
    public static final String EOT = "<|eot|>";

    /**
     * The chat template: BOS, then each utterance followed by EOT; system (and developer) messages are
     * put before the next user message, each followed by a blank line, as limactl serve does (LIMA has
     * no system role). The prompt for a reply already ends with EOT, so the generation prompt adds nothing.
     */
    public static final String CHAT_TEMPLATE = chatTemplate(EOT);

    /** The chat template with the given end-of-turn token text (LIMA's own, or a reused one such as Llama 3's <|eot_id|>). */
    public static String chatTemplate(String eot) {
        String e = eot.replace("\\", "\\\\").replace("'", "\\'");
        return "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
                + "{% if message['role'] in ['system', 'developer'] %}{% set ns.system = ns.system + message['content'] + '\\n\\n' %}"
                + "{% elif message['role'] == 'user' %}{{ ns.system + message['content'] + '" + e + "' }}{% set ns.system = '' %}"
                + "{% else %}{{ message['content'] + '" + e + "' }}{% endif %}{% endfor %}";
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private HfTokenizerFiles() {}

    /**
     * tokenizer.json for a SentencePiece model, as transformers' converter for LLaMA builds it, with the
     * normalizer taken from the model (so a model with NFKC normalisation or whitespace folding is
     * matched too). Unigram models are not converted (an error saying so).
     */
    public static ObjectNode fromSentencePiece(SpModel m) {
        if (m.modelType() != SpModel.BPE) {
            throw new TokenizerException("only SentencePiece BPE models (LLaMA's) are converted to tokenizer.json; this one is of type "
                    + m.modelType());
        }
        Map<String, Integer> vocab = new HashMap<>();
        ObjectNode v = JSON.createObjectNode();
        for (int i = 0; i < m.pieces().size(); i++) {
            vocab.put(m.pieces().get(i).text(), i);
            v.put(m.pieces().get(i).text(), i);
        }
        // merges: every split of a piece into two pieces, ordered by the merged piece's score (highest
        // first; a stable sort keeps vocabulary order, then the halves' ids, among equal scores)
        record Merge(String l, String r, float score) {}
        List<Merge> merges = new ArrayList<>();
        for (SpModel.Piece p : m.pieces()) {
            List<Merge> local = new ArrayList<>();
            String t = p.text();
            for (int k = 1; k < t.length(); k++) {
                if (Character.isLowSurrogate(t.charAt(k))) continue;  // split between code points only
                String l = t.substring(0, k), r = t.substring(k);
                if (vocab.containsKey(l) && vocab.containsKey(r)) local.add(new Merge(l, r, p.score()));
            }
            local.sort(Comparator.comparingInt((Merge x) -> vocab.get(x.l())).thenComparingInt(x -> vocab.get(x.r())));
            merges.addAll(local);
        }
        merges.sort(Comparator.comparingDouble((Merge x) -> x.score()).reversed());
        ArrayNode mj = JSON.createArrayNode();
        for (Merge x : merges) mj.add(x.l() + " " + x.r());

        ObjectNode root = JSON.createObjectNode();
        root.put("version", "1.0").putNull("truncation");
        root.putNull("padding");
        ArrayNode added = root.putArray("added_tokens");
        for (int i = 0; i < m.pieces().size(); i++) {
            int type = m.pieces().get(i).type();
            if (type == 2 || type == 3) added.add(addedToken(i, m.pieces().get(i).text()));
        }
        ArrayNode norms = JSON.createArrayNode();
        if (m.charsmap().length > 0) {
            norms.addObject().put("type", "Precompiled").put("precompiled_charsmap", Base64.getEncoder().encodeToString(m.charsmap()));
        }
        if (m.removeExtraWhitespaces()) {
            norms.addObject().put("type", "Strip").put("strip_left", true).put("strip_right", true);
            replace(norms.addObject(), "Regex", " {2,}", " ");
        }
        if (m.addDummyPrefix()) norms.addObject().put("type", "Prepend").put("prepend", "\u2581");
        replace(norms.addObject(), "String", " ", "\u2581");
        root.putObject("normalizer").put("type", "Sequence").set("normalizers", norms);
        root.putNull("pre_tokenizer");
        root.putNull("post_processor");
        ObjectNode dec = root.putObject("decoder").put("type", "Sequence");
        ArrayNode decs = dec.putArray("decoders");
        replace(decs.addObject(), "String", "\u2581", " ");
        decs.addObject().put("type", "ByteFallback");
        decs.addObject().put("type", "Fuse");
        if (m.addDummyPrefix()) decs.addObject().put("type", "Strip").put("content", " ").put("start", 1).put("stop", 0);
        ObjectNode model = root.putObject("model").put("type", "BPE");
        model.putNull("dropout");
        model.put("unk_token", m.pieces().get(m.unkId()).text());
        model.putNull("continuing_subword_prefix");
        model.putNull("end_of_word_suffix");
        model.put("fuse_unk", true).put("byte_fallback", m.byteFallback()).put("ignore_merges", false);
        model.set("vocab", v);
        model.set("merges", mj);
        return root;
    }

    private static void replace(ObjectNode o, String kind, String pattern, String content) {
        o.put("type", "Replace");
        o.putObject("pattern").put(kind, pattern);
        o.put("content", content);
    }

    private static ObjectNode addedToken(int id, String content) {
        return JSON.createObjectNode().put("id", id).put("content", content).put("single_word", false).put("lstrip", false)
                .put("rstrip", false).put("normalized", false).put("special", true);
    }

    /**
     * Registers EOT at {@code eotId} as an added special token (if the base already has a token at that
     * id, the file is left as it is and false returned) and makes the post-processor put BOS first when
     * special tokens are asked for ({@code encode(text)}; apply_chat_template asks for none).
     */
    static boolean addEot(ObjectNode tj, int eotId, String eot, int bosId, String bos) {
        ArrayNode added = tj.withArray("added_tokens");
        boolean present = false;
        for (JsonNode t : added) {
            if (t.path("id").asInt() == eotId) {
                if (!t.path("content").asText().equals(eot)) return false;
                present = true;
            }
        }
        JsonNode vocab = tj.path("model").path("vocab");
        if (!present && vocab.isObject()) {
            var it = vocab.fields();
            while (it.hasNext()) {
                var e = it.next();
                if (e.getValue().asInt() == eotId) {
                    if (!e.getKey().equals(eot)) return false;
                    present = true;
                }
            }
        }
        if (!present) added.add(addedToken(eotId, eot));
        if (tj.path("post_processor").isNull() || tj.path("post_processor").isMissingNode()) {
            ObjectNode pp = tj.putObject("post_processor").put("type", "TemplateProcessing");
            ArrayNode single = pp.putArray("single");
            single.addObject().putObject("SpecialToken").put("id", bos).put("type_id", 0);
            single.addObject().putObject("Sequence").put("id", "A").put("type_id", 0);
            ArrayNode pair = pp.putArray("pair");
            pair.addObject().putObject("SpecialToken").put("id", bos).put("type_id", 0);
            pair.addObject().putObject("Sequence").put("id", "A").put("type_id", 0);
            pair.addObject().putObject("SpecialToken").put("id", bos).put("type_id", 1);
            pair.addObject().putObject("Sequence").put("id", "B").put("type_id", 1);
            ObjectNode st = pp.putObject("special_tokens").putObject(bos).put("id", bos);
            st.putArray("ids").add(bosId);
            st.putArray("tokens").add(bos);
        }
        return true;
    }

    private static void writeJson(Path file, JsonNode value) throws IOException {
        dev.limactl.data.AtomicFiles.writeString(file, JSON.writerWithDefaultPrettyPrinter().writeValueAsString(value) + "\n");
    }

    /**
     * Writes the files into a checkpoint directory that already holds the base's tokenizer file(s):
     * tokenizer.json (the base's, with EOT, or converted from tokenizer.model), tokenizer_config.json,
     * special_tokens_map.json and generation_config.json; config.json's bos/eos/pad made to agree.
     * What cannot be written (a Unigram SentencePiece model has no converter here) is said through warn.
     */
    public static void write(Path ck, Tokenizer tok, int eotId, int maxPositions, Consumer<String> warn) {
        try {
            int bosId = tok.bosId(), eosId = tok.eosId();
            String bos = tok.piece(bosId), eos = tok.piece(eosId);
            // LIMA's own EOT (a new id after the tokenizer's), or a token the tokenizer has (model.eot_token)
            String eot = eotId < tok.vocabSize() ? tok.piece(eotId) : EOT;
            Path tjFile = ck.resolve("tokenizer.json");
            ObjectNode tj = null;
            if (Files.isRegularFile(tjFile)) {
                tj = (ObjectNode) JSON.readTree(tjFile.toFile());
            } else if (Files.isRegularFile(ck.resolve("tokenizer.model"))) {
                try {
                    tj = fromSentencePiece(SpModel.parse(Files.readAllBytes(ck.resolve("tokenizer.model"))));
                } catch (TokenizerException | IllegalArgumentException e) {
                    warn.accept(ck + ": no tokenizer.json written (" + e.getMessage() + "); Hugging Face loads tokenizer.model with sentencepiece");
                }
            }
            boolean eotKnown = tj != null && addEot(tj, eotId, eot, bosId, bos);
            if (tj != null && !eotKnown) {
                warn.accept(ck + ": tokenizer.json already has a token at LIMA's EOT id " + eotId + "; it is left as it is");
            }
            if (tj != null) writeJson(tjFile, tj);

            ObjectNode cfg = Files.isRegularFile(ck.resolve("tokenizer_config.json"))
                    ? (ObjectNode) JSON.readTree(ck.resolve("tokenizer_config.json").toFile()) : JSON.createObjectNode();
            // the fast tokenizer as tokenizer.json defines it (no class-specific rewriting of its normalizer)
            if (tj != null) cfg.put("tokenizer_class", "PreTrainedTokenizerFast");
            cfg.put("bos_token", bos).put("eos_token", eos).put("unk_token", tok.piece(0));
            cfg.remove("pad_token");
            cfg.remove("added_tokens_decoder");  // tokenizer.json's added_tokens say it, with EOT
            cfg.put("add_bos_token", true).put("add_eos_token", false).put("clean_up_tokenization_spaces", false);
            cfg.put("model_max_length", maxPositions);
            cfg.putArray("additional_special_tokens").add(eot);
            cfg.put("chat_template", chatTemplate(eot));
            writeJson(ck.resolve("tokenizer_config.json"), cfg);

            ObjectNode map = JSON.createObjectNode().put("bos_token", bos).put("eos_token", eos).put("unk_token", tok.piece(0));
            map.putArray("additional_special_tokens").add(eot);
            writeJson(ck.resolve("special_tokens_map.json"), map);

            // LIMA's sampling; EOS and EOT both end an answer
            ObjectNode gen = JSON.createObjectNode().put("_from_model_config", false).put("bos_token_id", bosId);
            gen.putArray("eos_token_id").add(eosId).add(eotId);
            gen.put("pad_token_id", eosId).put("do_sample", true).put("temperature", 0.7).put("top_p", 0.9).put("top_k", 0)
                    .put("repetition_penalty", 1.2).put("max_new_tokens", 2048);
            writeJson(ck.resolve("generation_config.json"), gen);

            Path config = ck.resolve("config.json");
            if (Files.isRegularFile(config)) {
                ObjectNode c = (ObjectNode) JSON.readTree(config.toFile());
                c.put("bos_token_id", bosId);
                c.putArray("eos_token_id").add(eosId).add(eotId);
                if (!c.hasNonNull("pad_token_id") || c.get("pad_token_id").asInt(-1) < 0) c.put("pad_token_id", eosId);
                writeJson(config, c);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the tokenizer files of " + ck + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }
}
