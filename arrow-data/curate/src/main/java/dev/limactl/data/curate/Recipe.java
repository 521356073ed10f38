package dev.limactl.data.curate;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.limactl.data.DataFormatException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A curation recipe (YAML): which sources, how many from each, into which split, the seed. Paths
 * are relative to the recipe file. The paper's recipe ships as the preset {@code lima}.
 */
public record Recipe(long seed, @JsonProperty("on_error") String onError, Dedup dedup, boolean decontaminate,
                     List<Source> sources) {

    /** First-person words (LIMA drops answers written in the first person). */
    public static final List<String> FIRST_PERSON = List.of("I", "I'm", "I've", "I'd", "I'll", "my", "me", "mine", "myself");
    /** Phrases referring to other answers or to the site. */
    public static final List<String> REFERENCES = List.of("as mentioned", "as others have", "as stated", "other answers",
            "another answer", "this answer", "the answer above", "the answer below", "above answer", "previous answer",
            "accepted answer", "stack exchange", "stackexchange", "stack overflow", "stackoverflow", "this site", "upvote",
            "downvote", "edit:");

    /**
     * @param threshold estimated Jaccard similarity of word 5-gram sets above which two examples are duplicates
     */
    public record Dedup(boolean enabled, double threshold, int shingle, int permutations) {}

    /**
     * One source block. Keys a type does not use are ignored; {@code type} is one of stackexchange,
     * wikihow, writingprompts, super-ni, manual, jsonl.
     */
    public record Source(String type, String split, String path, Integer count, Map<String, Integer> groups,
                         Double temperature, @JsonProperty("stem_exchanges") List<String> stemExchanges,
                         @JsonProperty("min_answer_score") Integer minAnswerScore,
                         @JsonProperty("min_answer_chars") Integer minAnswerChars,
                         @JsonProperty("max_answer_chars") Integer maxAnswerChars,
                         @JsonProperty("require_question_title") Boolean requireQuestionTitle,
                         @JsonProperty("max_candidates") Integer maxCandidates,
                         @JsonProperty("first_person") List<String> firstPerson, List<String> references,
                         @JsonProperty("prompt_body_probability") Double promptBodyProbability, String selection,
                         List<String> categories) {
        public int countOr(int d) {
            return count == null ? d : count;
        }
    }

    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory())
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
    static final Set<String> TYPES = Set.of("stackexchange", "wikihow", "writingprompts", "super-ni", "manual", "jsonl");
    static final Set<String> SPLITS = Set.of("train", "dev", "test");

    public static Recipe load(Path file) {
        try {
            return parse(Files.readString(file), file.toString());
        } catch (NoSuchFileException e) {
            throw new DataFormatException("recipe " + file + " does not exist");
        } catch (IOException e) {
            throw new DataFormatException("cannot read recipe " + file + ": " + e.getMessage(), e);
        }
    }

    /** Parses recipe YAML; `where` names it in errors. */
    public static Recipe parse(String yaml, String where) {
        try {
            return validate(YAML.readValue(yaml, Recipe.class), where);
        } catch (JsonMappingException e) {
            String path = e.getPath().stream().map(r -> r.getFieldName() != null ? r.getFieldName() : "[" + r.getIndex() + "]")
                    .reduce((a, b) -> a + "." + b).orElse("?");
            throw new DataFormatException(where + ": key \"" + path + "\": " + e.getOriginalMessage(), e);
        } catch (JsonProcessingException e) {
            throw new DataFormatException(where + ": not valid YAML: " + e.getOriginalMessage(), e);
        }
    }

    /** The text of a shipped recipe preset ("lima", "demo"). */
    public static String preset(String name) {
        try (InputStream in = Recipe.class.getResourceAsStream("recipes/" + name + ".yaml")) {
            if (in == null) throw new DataFormatException("unknown recipe preset \"" + name + "\" (known: lima, demo)");
            return new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    static Recipe validate(Recipe r, String where) {
        if (r.sources() == null || r.sources().isEmpty()) throw new DataFormatException(where + ": the recipe lists no sources");
        if (r.onError() != null && !Set.of("fail", "skip").contains(r.onError())) {
            throw new DataFormatException(where + ": on_error must be fail or skip, got \"" + r.onError() + "\"");
        }
        for (int i = 0; i < r.sources().size(); i++) {
            Source s = r.sources().get(i);
            String at = where + ": sources[" + i + "]";
            if (s.type() == null || !TYPES.contains(s.type())) throw new DataFormatException(at + ": type must be one of " + TYPES + ", got " + s.type());
            if (s.split() == null || !SPLITS.contains(s.split())) throw new DataFormatException(at + ": split must be train, dev or test, got " + s.split());
            if (s.path() == null) throw new DataFormatException(at + ": path is required");
            if (s.count() != null && s.count() < 0) throw new DataFormatException(at + ": count must be >= 0");
        }
        if (r.dedup() != null && (r.dedup().threshold() <= 0 || r.dedup().threshold() > 1)) {
            throw new DataFormatException(where + ": dedup.threshold must be in (0, 1]");
        }
        return r;
    }
}
