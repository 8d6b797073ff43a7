# One test executable per module (unit) and per end-to-end area. ferry_test() is defined in CMakeLists.txt.
ferry_test(store_test store/store_test.cc)
ferry_test(store_backend_test store/backend_test.cc)
ferry_test(disk_test disk/disk_test.cc)
ferry_test(replicate_progress_test replicate/progress_test.cc)
ferry_test(e2e_formats_test e2e/formats_test.cc e2e/cli.cc)
ferry_test(e2e_faults_test e2e/faults_test.cc e2e/cli.cc)
ferry_unit_test(auth_test ferry_auth auth/sigv4_test.cc)
# Its own binary: it replaces the global operator new and delete to search freed memory for secrets.
ferry_unit_test(auth_wipe_test ferry_client auth/wipe_test.cc)
target_link_libraries(auth_wipe_test PRIVATE OpenSSL::Crypto)
ferry_unit_test(inventory_test ferry_inventory inventory/inventory_test.cc)
ferry_unit_test(catalog_test ferry_catalog catalog/catalog_test.cc)
ferry_unit_test(client_test ferry_client client/client_test.cc)
ferry_test(store_ingest_test store/ingest_test.cc)
ferry_test(e2e_service_test e2e/service_test.cc e2e/service.cc e2e/cli.cc)
target_link_libraries(e2e_service_test PRIVATE ferry_client)
ferry_test(e2e_service_faults_test e2e/service_faults_test.cc e2e/service.cc e2e/cli.cc)
target_link_libraries(e2e_service_faults_test PRIVATE ferry_client)
# The SMS API driven by the official AWS SDK for JavaScript (tests/sdk; scripts/setup.sh installs its node_modules).
find_program(FERRY_NODE node)
if(FERRY_NODE)
  add_test(NAME sdk_test
           COMMAND ${CMAKE_COMMAND} -E env FERRY_BINARY=$<TARGET_FILE:ferry>
                   ${FERRY_NODE} --test --test-concurrency=1 --test-reporter=spec ${CMAKE_CURRENT_SOURCE_DIR}/sdk/
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/sdk)
  set_tests_properties(sdk_test PROPERTIES TIMEOUT 600)
else()
  message(WARNING "node not found: sdk_test (the official AWS SDK against ferry) is not registered; run scripts/setup.sh")
endif()
ferry_unit_test(service_test ferry_service service/service_test.cc)
ferry_unit_test(api_http_test ferry_api api/http_test.cc)
target_link_libraries(api_http_test PRIVATE Boost::headers OpenSSL::SSL)
# The standing adversarial suite: one test (or more) per class of defect a hostile user found (docs/security.md).
ferry_test(e2e_adversarial_test e2e/adversarial_test.cc e2e/service.cc e2e/cli.cc)
target_link_libraries(e2e_adversarial_test PRIVATE ferry_client)
ferry_unit_test(api_buffer_pool_test ferry_api api/buffer_pool_test.cc)
# A flood of over a thousand slow connections against a real server: run alone, so that the machine's other tests
# neither slow its liveness probes nor share its connection limits.
add_executable(e2e_flood_test e2e/flood_test.cc e2e/service.cc e2e/cli.cc)
target_link_libraries(e2e_flood_test PRIVATE ferry_testfixtures ferry_client GTest::gtest_main nlohmann_json::nlohmann_json OpenSSL::Crypto)
target_compile_definitions(e2e_flood_test PRIVATE FERRY_BINARY="$<TARGET_FILE:ferry>")
add_dependencies(e2e_flood_test ferry)
add_test(NAME e2e_flood_test COMMAND e2e_flood_test)
set_tests_properties(e2e_flood_test PROPERTIES RUN_SERIAL TRUE TIMEOUT 600)
