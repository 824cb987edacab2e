#include "src/endpoint/state_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

namespace membrane::endpoint {

TEST(StateStore, AtomicWriteReadListRemove) {
  char tmpl[] = "/tmp/mb-state-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = std::string(tmpl) + "/a/b";
  ASSERT_TRUE(makeDirs(dir).ok());
  ASSERT_TRUE(writeFileAtomic(dir + "/1.json", "one").ok());
  ASSERT_TRUE(writeFileAtomic(dir + "/1.json", "uno").ok());
  ASSERT_TRUE(writeFileAtomic(dir + "/2.json", "two").ok());
  EXPECT_EQ(*readFile(dir + "/1.json"), "uno");
  auto files = listFiles(dir, ".json");
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(*files, (std::vector<std::string>{dir + "/1.json", dir + "/2.json"}));
  EXPECT_TRUE(removeFile(dir + "/1.json").ok());
  EXPECT_TRUE(removeFile(dir + "/1.json").ok());  // absent is fine
  EXPECT_FALSE(readFile(dir + "/1.json").ok());
  EXPECT_EQ(listFiles(dir + "/none", ".json")->size(), 0u);
  EXPECT_EQ(access((dir + "/2.json.tmp").c_str(), F_OK), -1);
  system(("rm -rf " + std::string(tmpl)).c_str());
}

}  // namespace membrane::endpoint
