# One test executable per module (unit) and per end-to-end area. ferry_test() is defined in CMakeLists.txt.
ferry_test(store_test store/store_test.cc)
ferry_test(disk_test disk/disk_test.cc)
ferry_test(e2e_formats_test e2e/formats_test.cc e2e/cli.cc)
ferry_test(e2e_faults_test e2e/faults_test.cc e2e/cli.cc)
ferry_unit_test(auth_test ferry_auth auth/sigv4_test.cc)
ferry_unit_test(inventory_test ferry_inventory inventory/inventory_test.cc)
ferry_unit_test(catalog_test ferry_catalog catalog/catalog_test.cc)
